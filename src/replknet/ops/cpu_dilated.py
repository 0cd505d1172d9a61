"""CPU implementations of the dilated depthwise convolution and the rule ``impl="auto"`` follows for them.

UniRepLKNet trains each large kernel beside small depthwise branches of kernel ``k`` in 3..9 with dilation ``r`` in
2..7 (``padding = r (k - 1) / 2``). On this CPU aten's dilated depthwise convolution has a dedicated oneDNN kernel
(``jit_dw``) only for the NCHW forward, and only while the extent ``r (k - 1) + 1`` is at most 13 (AVX-512; 9 with
AVX2); its grad_input and grad_weight, and any forward beyond that extent, fall back to a GEMM path (docs/ops.md).

Implementations (``fn(x, weight, bias, dilation)``, stride 1, odd ``k``; output in the input's memory format):

- ``native_nchw`` / ``native_cl``: ``F.conv2d(..., dilation=r)`` on that layout, backward by aten.
- ``dense``: the dense equivalent kernel (size ``r (k - 1) + 1``, zeros between the taps) through the dilation-1
  auto rule: the library's large-kernel paths.
- ``polyphase``: the ``r x r`` interleaved sub-grids of the plane (rows and columns ``i = s mod r``) never mix, and
  on each the dilated convolution is an undilated ``k x k`` one; all ``r^2`` sub-grids go through the dilation-1
  auto rule as one batch of ``N r^2`` planes ``r`` times smaller per side.
- ``hybrid``: forward by oneDNN's dilated jit_dw kernel (NCHW, or channels_last for channels_last input when the
  extent fits in the plane; ``polyphase`` beyond its extent); grad_input as the same forward with the kernel
  rotated by 180 degrees; grad_weight by the library's Toeplitz/FFT weight gradient, on the
  polyphase sub-grids for small planes, on the dense equivalent kernel otherwise.

Every implementation first drops the kernel taps that can never touch the plane (offset ``r |i - k // 2|`` of at
least ``max(H, W)``): exact, and a 3x3 kernel with ``r = 7`` on a 7x7 plane becomes a 1x1 one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from replknet.ops import fft
from replknet.ops.cpu import _AVX512, _autocast_inputs, _memory_format
from replknet.ops.dispatch import (
    auto_dwconv2d,
    dilate_kernel,
    register_dilated_auto_rule,
    register_dilated_impl,
    register_impl,
)
from replknet.ops.toeplitz import toeplitz_grad_weight

_LOW_PRECISION = (torch.bfloat16, torch.float16)
# NOTE: the largest extent r (k - 1) + 1 oneDNN's NCHW depthwise forward (jit_dw) takes, dilated or not: 13 measured
# with AVX-512 (ONEDNN_VERBOSE: k = 7, r = 2 runs jit_dw, k = 3, r = 7 and k = 9, r = 2 run the GEMM path); 9 is the
# undilated limit measured with AVX2 (docs/ops.md), assumed to hold for the extent there.
_JIT_DW_MAX_EXTENT = 13 if _AVX512 else 9
# NOTE: grad_weight on the polyphase sub-grids up to this many pixels per (full) plane, on the dense equivalent
# kernel above: at UniRepLKNet-S's stage shapes (B = 16, every (k, r) of its table) the hybrid with the polyphase
# grad_weight was 1.1-2.1x faster on 14x14 planes, level on 7x7, and mostly 1.2-2.5x slower on 28x28 and 56x56
# (a one-off comparison of the two variants on the loaded machine, one thread).
_POLYPHASE_GRAD_WEIGHT_MAX_PIXELS = 14 * 14
# Sub-grid planes of at most this many pixels use the Toeplitz weight gradient (as cpu.py's hybrid does).
_TOEPLITZ_MAX_PIXELS = 64


def reachable_kernel(weight: torch.Tensor, dilation: int, height: int, width: int) -> torch.Tensor:
    """The central taps of ``weight`` that can touch an ``height x width`` plane under ``dilation`` (a view)."""
    half = weight.shape[-1] // 2
    reach = (max(height, width) - 1) // dilation
    if reach >= half:
        return weight
    return weight[..., half - reach : half + reach + 1, half - reach : half + reach + 1]


def space_to_batch(x: torch.Tensor, dilation: int) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N r^2, C, ceil(H / r), ceil(W / r))``: the ``r x r`` interleaved sub-grids as a batch.

    The plane is zero-padded at the bottom and right to a multiple of ``r`` (the zeros stand for the convolution's
    own padding). Sub-grid ``(s, t)`` of sample ``n`` is batch entry ``(n r + s) r + t``; NCHW-contiguous result.
    """
    batch, channels, height, width = x.shape
    rows, cols = -(-height // dilation), -(-width // dilation)
    x = F.pad(x, (0, cols * dilation - width, 0, rows * dilation - height))
    x = x.reshape(batch, channels, rows, dilation, cols, dilation).permute(0, 3, 5, 1, 2, 4)  # (N, r, r, C, h, w)
    return x.reshape(batch * dilation * dilation, channels, rows, cols)


def batch_to_space(y: torch.Tensor, dilation: int, height: int, width: int) -> torch.Tensor:
    """Inverse of ``space_to_batch``: ``(N r^2, C, h, w)`` -> ``(N, C, height, width)`` (padding cropped)."""
    channels, rows, cols = y.shape[1:]
    batch = y.shape[0] // (dilation * dilation)
    y = y.reshape(batch, dilation, dilation, channels, rows, cols).permute(0, 3, 4, 1, 5, 2)  # (N, C, h, r, w, r)
    return y.reshape(batch, channels, rows * dilation, cols * dilation)[:, :, :height, :width]


def native_nchw_dilated(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int):
    """``F.conv2d(..., dilation=r)`` on an NCHW copy of ``x`` (aten autograd)."""
    return _native(x, weight, bias, dilation, torch.contiguous_format)


def native_cl_dilated(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int):
    """``F.conv2d(..., dilation=r)`` on a channels_last copy of ``x`` (aten autograd)."""
    return _native(x, weight, bias, dilation, torch.channels_last)


def _native(x, weight, bias, dilation: int, layout: torch.memory_format) -> torch.Tensor:
    x, weight, bias = _autocast_inputs(x, weight, bias)
    out_format, dtype = _memory_format(x), x.dtype
    weight = reachable_kernel(weight, dilation, x.shape[-2], x.shape[-1])
    with torch.autocast(x.device.type, enabled=False):
        if dtype in _LOW_PRECISION:  # as cpu.py's native impls: float32 compute, one rounding
            x, weight = x.float(), weight.float()
            bias = None if bias is None else bias.float()
        padding = dilation * (weight.shape[-1] - 1) // 2
        x = x.contiguous(memory_format=layout)
        y = F.conv2d(x, weight, bias, padding=padding, dilation=dilation, groups=x.shape[1])
    return y.to(dtype=dtype, memory_format=out_format)


def dense_dilated(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int):
    """The dense equivalent kernel through the dilation-1 auto rule."""
    weight = reachable_kernel(weight, dilation, x.shape[-2], x.shape[-1])
    return auto_dwconv2d(x, dilate_kernel(weight, dilation), bias)


def polyphase_dilated(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int):
    """The ``r^2`` sub-grids as one batch of undilated convolutions through the dilation-1 auto rule."""
    height, width = x.shape[-2:]
    weight = reachable_kernel(weight, dilation, height, width)
    if dilation == 1 or weight.shape[-1] == 1:
        return auto_dwconv2d(x, weight, bias)
    y = auto_dwconv2d(space_to_batch(x, dilation), weight, bias)  # (N r^2, C, h, w)
    return batch_to_space(y, dilation, height, width).contiguous(memory_format=_memory_format(x))


def _extent(kernel_size: int, dilation: int) -> int:
    return dilation * (kernel_size - 1) + 1


def _native_layout(x: torch.Tensor, kernel_size: int, dilation: int) -> torch.memory_format | None:
    """The layout in which oneDNN's dilated depthwise forward (jit_dw) takes ``x``, or None where it has none.

    channels_last input stays channels_last while the extent also fits in the plane: beyond that, oneDNN's
    channels_last jit_dw gives way to a generic grouped kernel for some widths (7x7 planes, 256 channels and more).
    """
    extent = _extent(kernel_size, dilation)
    if extent > _JIT_DW_MAX_EXTENT:
        return None
    if dilation > 1 and _memory_format(x) == torch.channels_last and extent <= min(x.shape[-2:]):
        return torch.channels_last
    return torch.contiguous_format


def _forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int) -> torch.Tensor:
    """Dilated correlation in the compute dtype, no autograd: oneDNN's jit_dw kernel, polyphase beyond its extent."""
    dtype = fft.compute_dtype(x.dtype)
    weight, bias = weight.to(dtype), None if bias is None else bias.to(dtype)
    layout = _native_layout(x, weight.shape[-1], dilation)
    if layout is not None:
        padding = dilation * (weight.shape[-1] - 1) // 2
        x = x.to(dtype=dtype, memory_format=layout)
        return F.conv2d(x, weight, bias, padding=padding, dilation=dilation, groups=x.shape[1])
    x = x.to(dtype=dtype, memory_format=torch.contiguous_format)
    if dilation == 1:  # hybrid_nchw beyond jit_dw's kernel sizes: nothing to rearrange
        return auto_dwconv2d(x, weight, bias)
    y = auto_dwconv2d(space_to_batch(x, dilation), weight, bias)
    return batch_to_space(y, dilation, x.shape[-2], x.shape[-1])


def _grad_weight(x: torch.Tensor, grad_output: torch.Tensor, weight: torch.Tensor, dilation: int) -> torch.Tensor:
    """The Toeplitz or FFT weight gradient, on the polyphase sub-grids (small planes) or the dense kernel."""
    if 1 < dilation and x.shape[-2] * x.shape[-1] <= _POLYPHASE_GRAD_WEIGHT_MAX_PIXELS:
        x, grad_output = space_to_batch(x, dilation), space_to_batch(grad_output, dilation)
        dense = weight
    else:
        dense = dilate_kernel(weight, dilation)
    if x.shape[-2] * x.shape[-1] <= _TOEPLITZ_MAX_PIXELS:
        grad = toeplitz_grad_weight(x, grad_output, dense.shape[-1])
    else:
        grad = fft.fft_backward(x, dense, grad_output, need_input=False, need_weight=True)[1]
    if dense is weight:
        return grad
    return grad[:, :, ::dilation, ::dilation]  # (C, 1, k, k): the dense gradient at the taps


class _DilatedHybrid(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int):
        ctx.save_for_backward(x, weight)
        ctx.dilation = dilation
        ctx.bias_dtype = None if bias is None else bias.dtype
        return _forward(x, weight, bias, dilation).to(dtype=x.dtype, memory_format=_memory_format(x))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        x, weight = ctx.saved_tensors
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_input = grad_weight = grad_bias = None
        if need_input:  # the correlation with the kernel rotated by 180 degrees
            grad_input = _forward(grad_output, weight.flip(-2, -1), None, ctx.dilation)
            grad_input = grad_input.to(dtype=x.dtype, memory_format=_memory_format(x))
        if need_weight:
            grad_weight = _grad_weight(x, grad_output, weight, ctx.dilation).to(weight.dtype)
        if need_bias:
            grad_bias = grad_output.sum((0, 2, 3), dtype=fft.compute_dtype(grad_output.dtype)).to(ctx.bias_dtype)
        return grad_input, grad_weight, grad_bias, None


def hybrid_dilated(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int):
    """oneDNN's dilated NCHW forward and grad_input, the library's Toeplitz/FFT grad_weight."""
    x, weight, bias = _autocast_inputs(x, weight, bias)
    weight = reachable_kernel(weight, dilation, x.shape[-2], x.shape[-1])  # unreachable taps: zero gradient
    with torch.autocast(x.device.type, enabled=False):
        return _DilatedHybrid.apply(x, weight, bias, dilation)


register_dilated_impl("native_nchw", native_nchw_dilated)
register_dilated_impl("native_cl", native_cl_dilated)
register_dilated_impl("dense", dense_dilated)
register_dilated_impl("polyphase", polyphase_dilated)
register_dilated_impl("hybrid", hybrid_dilated)


def hybrid_nchw_dwconv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """The hybrid at dilation 1: NCHW jit_dw forward and grad_input, the library's Toeplitz/FFT grad_weight.

    cpu.py's ``hybrid`` runs its forward and grad_input in channels_last because with AVX2 jit_dw stops at K = 9;
    with AVX-512 it reaches K = 13, and on NCHW input this path saves the layout copies (docs/ops.md).
    """
    return hybrid_dilated(x, weight, bias, 1)


register_impl("hybrid_nchw", hybrid_nchw_dwconv2d)


# NOTE: channels_last input, k = 3, planes above 14x14, training: aten's channels_last backward (a grouped kernel
# that wastes most of its 16-channel blocks, cheap with 9 taps) measured 1.1-1.6x faster than the hybrid at
# UniRepLKNet-S's 56x56 and 28x28 stages (docs/ops.md).
_CL_NATIVE_TRAIN_MIN_PIXELS = 14 * 14 + 1


def cpu_dilated_auto_rule(x: torch.Tensor, weight: torch.Tensor, dilation: int) -> str:
    """The implementation ``impl="auto"`` uses for a dilated convolution on CPU (measured, docs/ops.md).

    Keys: the size and extent of the reachable kernel, the plane, the input's memory format, whether a gradient
    is needed.
    """
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    kernel_size = reachable_kernel(weight, dilation, x.shape[-2], x.shape[-1]).shape[-1]
    channels_last = _memory_format(x) == torch.channels_last
    if kernel_size == 1:
        # NOTE: aten sends an undilated 1x1 depthwise convolution at batch < 16 on one thread to its slow
        # non-oneDNN path (measured at 7x7: 10-18x slower at B = 2), a dilated one to oneDNN; where aten's own condition
        # (batch >= 16 or several threads) picks oneDNN anyway, the undilated 1x1 is the faster (1.9x at B = 16)
        if x.shape[0] >= 16 or torch.get_num_threads() > 1:
            return "dense"
        return "native_cl" if channels_last else "native_nchw"
    layout = _native_layout(x, kernel_size, dilation)
    if needs_grad:
        if channels_last and kernel_size <= 3 and x.shape[-2] * x.shape[-1] >= _CL_NATIVE_TRAIN_MIN_PIXELS:
            return "native_cl"
        # NOTE: beyond jit_dw's extent the hybrid's forward and grad_input are polyphase passes; with k = 3 the whole
        # polyphase convolution (aten's backward on the sub-grids) measured faster, with k = 9 the hybrid
        return "polyphase" if layout is None and kernel_size <= 3 else "hybrid"
    if layout is not None:  # oneDNN's jit_dw forward
        return "native_cl" if layout == torch.channels_last else "native_nchw"
    # NOTE: beyond jit_dw's extent aten's GEMM path costs k^2 per pixel: with 9 taps it beats the polyphase copies
    if kernel_size <= 3:
        return "native_cl" if channels_last else "native_nchw"
    return "polyphase"


register_dilated_auto_rule("cpu", cpu_dilated_auto_rule)
