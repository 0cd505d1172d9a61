"""CPU implementations of the depthwise convolution and the rule ``impl="auto"`` follows on CPU.

Implementations (all stride 1, same padding, odd ``K``; output in the input's memory format):

- ``native_nchw``: ``F.conv2d`` on an NCHW tensor (oneDNN's dedicated depthwise kernel for small ``K``,
  a generic GEMM path for large ``K``), backward by aten.
- ``native_cl``: ``F.conv2d`` on a channels_last tensor (oneDNN's ``brdgmm_dw`` forward at every ``K``),
  backward by aten.
- ``fft``: chunked real FFTs for the forward and both gradients (``replknet.ops.fft``).
- ``toeplitz``: on small planes, each channel's convolution as an ``(H W) x (H W)`` matrix: forward, grad_input
  and grad_weight are batched GEMMs (``replknet.ops.toeplitz``); pays once the batch amortises the matrices.
- ``hybrid``: oneDNN forward (NCHW where its NCHW kernel covers ``K``, else channels_last); grad_input as the
  same forward with the 180-degree-rotated kernel; grad_weight (aten's is a GEMM path at a few GFLOP/s for every
  ``K`` > 3) by the Toeplitz GEMM on planes of at most 64 pixels, by a swapped-role oneDNN convolution (the
  output gradient as the kernel) or by chunked FFT, whichever measured fastest (``_grad_weight_method``).

Precision (``replknet.ops.precision``): on CPUs with bf16 instructions (AVX512-BF16, AMX) bf16 inputs go through
oneDNN and the GEMMs in bf16 (float32 accumulation, one rounding); FFTs, and everything on CPUs without them,
compute in float32 and round once. fp16 is computed in float32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from replknet.ops import fft
from replknet.ops.dispatch import register_auto_rule, register_impl
from replknet.ops.precision import compute_dtype, matrix_dtype
from replknet.ops.toeplitz import toeplitz_forward, toeplitz_grad_input, toeplitz_grad_weight

_LOW_PRECISION = (torch.bfloat16, torch.float16)
# NOTE: up to this many pixels per plane the hybrid's grad_weight is a batched GEMM plus scatter-add
# (replknet.ops.toeplitz): at 7x7 planes with K = 13 it measured 38 ms against 314 ms for the FFT (B = 16).
_TOEPLITZ_MAX_PIXELS = 64


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last if ``x`` is laid out that way (and not also plain contiguous), else contiguous.

    A strided view counts as channels_last when its strides are in channels_last order (C fastest, then W, H, N),
    as aten's ``suggest_memory_format`` decides for ``F.conv2d``: e.g. a channel slice of NHWC activations permuted
    to NCHW (timm's MambaOut gated blocks). Treated as NCHW, such an input was copied to NCHW and the result handed
    back in NCHW, so the caller's permute back to NHWC copied again.
    """
    if x.is_contiguous():
        return torch.contiguous_format
    if x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if x.dim() == 4:
        order = [d for d in (1, 3, 2, 0) if x.shape[d] > 1]
        strides = [x.stride(d) for d in order]
        if order and order[0] == 1 and len(order) > 1 and all(a < b for a, b in zip(strides, strides[1:])):
            return torch.channels_last
    return torch.contiguous_format


def _autocast_inputs(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Cast as ``F.conv2d`` would under autocast, so every implementation returns the same dtype."""
    device_type = x.device.type
    if not torch.is_autocast_enabled(device_type):
        return x, weight, bias
    dtype = torch.get_autocast_dtype(device_type)
    return x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)


def _native(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, layout: torch.memory_format):
    out_format = _memory_format(x)
    dtype = x.dtype
    compute = matrix_dtype(dtype)
    if dtype in _LOW_PRECISION and compute != dtype:
        x, weight = x.to(compute), weight.to(compute)
        bias = None if bias is None else bias.to(compute)
    y = F.conv2d(x.contiguous(memory_format=layout), weight, bias, padding=weight.shape[-1] // 2, groups=x.shape[1])
    return y.to(dtype=dtype, memory_format=out_format)


def native_nchw_dwconv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d`` on an NCHW copy of ``x`` (aten autograd)."""
    x, weight, bias = _autocast_inputs(x, weight, bias)
    with torch.autocast(x.device.type, enabled=False):
        return _native(x, weight, bias, torch.contiguous_format)


def native_cl_dwconv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d`` on a channels_last copy of ``x`` (aten autograd)."""
    x, weight, bias = _autocast_inputs(x, weight, bias)
    with torch.autocast(x.device.type, enabled=False):
        return _native(x, weight, bias, torch.channels_last)


def _onednn_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """oneDNN forward in ``matrix_dtype`` (bf16 on bf16 hardware), no autograd.

    NCHW where oneDNN's NCHW kernel (``jit_dw``) covers the kernel size (for channels_last input only above
    K = 11, where ``brdgmm_dw`` slows down); anything else runs channels_last (``brdgmm_dw``, every K). The result
    is in the layout it was computed in.
    """
    dtype = matrix_dtype(x.dtype)
    kernel_size = weight.shape[-1]
    nchw = _nchw_forward(kernel_size, _memory_format(x) == torch.contiguous_format)
    x = x.to(dtype=dtype, memory_format=torch.contiguous_format if nchw else torch.channels_last)
    bias = None if bias is None else bias.to(dtype)
    return F.conv2d(x, weight.to(dtype), bias, padding=kernel_size // 2, groups=x.shape[1])


def _bias_grad(grad_output: torch.Tensor, bias_dtype: torch.dtype) -> torch.Tensor:
    return grad_output.sum((0, 2, 3), dtype=compute_dtype(grad_output.dtype)).to(bias_dtype)


class _FFTDepthwiseConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.bias_dtype = None if bias is None else bias.dtype
        y = fft.fft_forward(x, weight, bias)  # (N, C, H, W) contiguous, x.dtype
        return y.contiguous(memory_format=_memory_format(x))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        x, weight = ctx.saved_tensors
        need_input, need_weight, need_bias = ctx.needs_input_grad
        grad_input, grad_weight = fft.fft_backward(x, weight, grad_output, need_input, need_weight)
        if grad_input is not None:
            grad_input = grad_input.contiguous(memory_format=_memory_format(x))
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        grad_bias = _bias_grad(grad_output, ctx.bias_dtype) if need_bias else None
        return grad_input, grad_weight, grad_bias


def _rotated_kernel_grad_input(grad_output: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    # grad_input(x) = forward(grad_output) with the kernel rotated by 180 degrees
    return _onednn_forward(grad_output, weight.flip(-2, -1), None)


# NOTE: the hybrid's weight-gradient method, from benchmarks/dwconv.py --calibrate-grad-weight --cpu-time (one
# thread, bf16 and fp32 alike, B = 8 and 32; docs/ops.md). The swapped-role convolution wins wherever its
# K^2 H W work per plane is small next to the FFT's per-plane cost: every kernel up to 14x14 planes (27x27 on
# 14x14: 8.4 ms against 27 for the FFT at B = 8), up to K = 27 on 28x28 (22 vs 32 ms), up to K = 7 on 56x56 (10 vs
# 25 ms; level at K = 13, FFT 1.6x ahead at K = 27). The Toeplitz table wins on 7x7 planes from K = 13 (3 vs 7
# ms) and, where the kernel covers the plane, once the batch outgrows its fixed cost (14x14 under 27x27: 18 vs
# 8.4 ms at B = 8, level at B = 32: 30 vs 29 ms).
_TOEPLITZ_GRAD_WEIGHT_MIN_BATCH = 32
# (largest plane in pixels, largest K for which the swapped-role convolution beats the FFT on it)
_SWAPPED_MAX_KERNEL = ((14 * 14, 1 << 30), (28 * 28, 27), (1 << 62, 7))


def _grad_weight_method(kernel_size: int, pixels: int, batch: int) -> str:
    """How the hybrid computes grad_weight: ``swapped``, ``toeplitz`` or ``fft`` (measured crossovers)."""
    if pixels <= _TOEPLITZ_MAX_PIXELS:
        return "swapped" if kernel_size <= 7 else "toeplitz"
    kernel_covers_plane = 2 * pixels <= kernel_size * kernel_size
    if pixels <= _TOEPLITZ_MAX_PLANE and kernel_covers_plane and batch >= _TOEPLITZ_GRAD_WEIGHT_MIN_BATCH:
        return "toeplitz"
    max_kernel = next(kernel for plane, kernel in _SWAPPED_MAX_KERNEL if pixels <= plane)
    return "swapped" if kernel_size <= max_kernel else "fft"


# NOTE: the swapped-role convolution goes over the batch in chunks whose zero-padded input planes are about this
# size (bytes): all N C planes in one oneDNN call ran 2-3x slower at B = 32 than per-sample calls (out of cache).
_SWAPPED_CHUNK_BYTES = 1 << 20


def swapped_grad_weight(x: torch.Tensor, grad_output: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """grad_weight as a depthwise convolution with the roles swapped: the output gradient is the kernel.

    ``gw[c, a, b] = sum_n sum_(h, w) x_pad[n, c, h + a, w + b] gy[n, c, h, w]``: each of the ``N C`` planes of ``x``,
    zero-padded by ``K // 2``, correlated with its own ``H x W`` plane of ``gy`` (a "valid" correlation with a
    ``K x K`` result), then summed over the batch. oneDNN's channels_last depthwise forward runs it at every kernel
    size, in ``matrix_dtype`` (bf16 on bf16 hardware), a few samples per call; the batch sum is in float32
    (float64 kept). Returns ``(C, 1, K, K)`` in that accumulation dtype.
    """
    batch, channels, height, width = x.shape
    dtype, accumulate = matrix_dtype(x.dtype), compute_dtype(x.dtype)
    pad = kernel_size // 2
    padded_bytes = channels * (height + 2 * pad) * (width + 2 * pad) * torch.finfo(dtype).bits // 8
    step = max(1, _SWAPPED_CHUNK_BYTES // padded_bytes)
    # accumulated tap-major, (K, K, C): the channels_last result of each chunk is (K, K, n C) in memory
    grad_weight = torch.zeros(kernel_size, kernel_size, channels, dtype=accumulate, device=x.device)
    for start in range(0, batch, step):
        n = min(step, batch - start)
        # NOTE: a fresh channels_last buffer: a one-sample slice of a channels_last tensor reshapes with an odd
        # batch stride, which aten reads as NCHW and sends to oneDNN's GEMM path (12-20x slower at K = 27)
        planes = torch.empty(
            1, n * channels, height, width, dtype=dtype, device=x.device, memory_format=torch.channels_last
        )
        planes.copy_(x[start : start + n].reshape(1, n * channels, height, width))
        # NOTE: contiguous: a channels_last output gradient would reshape to a strided "weight" that oneDNN
        # reorders through a slow generic path (27x slower per call, measured in the model's backward)
        kernels = grad_output[start : start + n].to(dtype).contiguous().reshape(n * channels, 1, height, width)
        # NOTE: an even plane side is an even "kernel" here; the explicit padding keeps the result K x K
        out = F.conv2d(planes, kernels, padding=pad, groups=n * channels)  # (1, n C, K, K), channels_last
        taps = out.permute(0, 2, 3, 1).reshape(kernel_size, kernel_size, n, channels)
        grad_weight += taps[:, :, 0] if n == 1 else taps.sum(2, dtype=accumulate)
    return grad_weight.permute(2, 0, 1).unsqueeze(1).contiguous()  # (C, 1, K, K)


def _hybrid_grad_weight(x: torch.Tensor, grad_output: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    kernel_size = weight.shape[-1]
    method = _grad_weight_method(kernel_size, x.shape[-2] * x.shape[-1], x.shape[0])
    if method == "toeplitz":
        return toeplitz_grad_weight(x, grad_output, kernel_size)
    if method == "swapped":
        return swapped_grad_weight(x, grad_output, kernel_size)
    return fft.fft_backward(x, weight, grad_output, need_input=False, need_weight=True)[1]


def _toeplitz_grad_weight(x: torch.Tensor, grad_output: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return toeplitz_grad_weight(x, grad_output, weight.shape[-1])


@dataclass(frozen=True)
class _Passes:
    """The three products of an implementation whose gradients are computed separately."""

    forward: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]  # (x, w, b) -> y
    grad_input: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (grad_output, w) -> grad_input
    grad_weight: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x, grad_output, w) -> grad_w


_HYBRID = _Passes(_onednn_forward, _rotated_kernel_grad_input, _hybrid_grad_weight)
_TOEPLITZ = _Passes(toeplitz_forward, toeplitz_grad_input, _toeplitz_grad_weight)


class _SeparatePassesConv(torch.autograd.Function):
    """Forward, grad_input and grad_weight from a ``_Passes``; results in the input's dtype and memory format."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, passes: _Passes):
        ctx.save_for_backward(x, weight)
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.passes = passes
        return passes.forward(x, weight, bias).to(dtype=x.dtype, memory_format=_memory_format(x))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        x, weight = ctx.saved_tensors
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_input = grad_weight = None
        if need_input:
            grad_input = ctx.passes.grad_input(grad_output, weight)
            grad_input = grad_input.to(dtype=x.dtype, memory_format=_memory_format(x))
        if need_weight:
            grad_weight = ctx.passes.grad_weight(x, grad_output, weight).to(weight.dtype)
        grad_bias = _bias_grad(grad_output, ctx.bias_dtype) if need_bias else None
        return grad_input, grad_weight, grad_bias, None


def fft_dwconv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Chunked-FFT forward and backward."""
    x, weight, bias = _autocast_inputs(x, weight, bias)
    with torch.autocast(x.device.type, enabled=False):
        return _FFTDepthwiseConv.apply(x, weight, bias)


def hybrid_dwconv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """oneDNN forward and grad_input (rotated kernel), grad_weight by Toeplitz, swapped-role conv or FFT."""
    x, weight, bias = _autocast_inputs(x, weight, bias)
    with torch.autocast(x.device.type, enabled=False):
        return _SeparatePassesConv.apply(x, weight, bias, _HYBRID)


def toeplitz_dwconv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Per-channel ``(H W) x (H W)`` matrices: forward, grad_input and grad_weight as batched GEMMs (small planes)."""
    x, weight, bias = _autocast_inputs(x, weight, bias)
    with torch.autocast(x.device.type, enabled=False):
        return _SeparatePassesConv.apply(x, weight, bias, _TOEPLITZ)


def _strided_grad_input(
    grad_output: torch.Tensor, weight: torch.Tensor, stride: int, padding: int, size: tuple[int, int]
) -> torch.Tensor:
    """grad_input of a strided depthwise convolution as a stride-1 oneDNN forward.

    The output gradient, zero-inserted by ``stride`` into a zero-padded buffer, is correlated with the 180-degree
    rotated kernel ("valid"), which yields exactly the ``size`` input positions. Same layout as ``grad_output``.
    """
    batch, channels, out_height, out_width = grad_output.shape
    kernel_size = weight.shape[-1]
    before = kernel_size - 1 - padding
    height, width = size
    layout = _memory_format(grad_output)
    buffer = torch.zeros(
        batch, channels, height + kernel_size - 1, width + kernel_size - 1, dtype=grad_output.dtype
    ).contiguous(memory_format=layout)
    rows = slice(before, before + (out_height - 1) * stride + 1, stride)
    cols = slice(before, before + (out_width - 1) * stride + 1, stride)
    buffer[:, :, rows, cols] = grad_output
    return F.conv2d(buffer, weight.flip(-2, -1), groups=channels)


class _StridedDepthwiseConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, padding: int):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        ctx.bias_dtype = None if bias is None else bias.dtype
        return F.conv2d(x, weight, bias, stride=stride, padding=padding, groups=x.shape[1])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        x, weight = ctx.saved_tensors
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_input = grad_weight = None
        if need_input:
            grad_input = _strided_grad_input(grad_output, weight, ctx.stride, ctx.padding, x.shape[-2:])
            grad_input = grad_input.contiguous(memory_format=_memory_format(x))
        if need_weight:
            stride, padding = [ctx.stride] * 2, [ctx.padding] * 2
            grad_weight = torch.ops.aten.convolution_backward(
                grad_output, x, weight, None, stride, padding, [1, 1], False, [0, 0], x.shape[1], [False, True, False]
            )[1]
        grad_bias = _bias_grad(grad_output, ctx.bias_dtype) if need_bias else None
        return grad_input, grad_weight, grad_bias, None, None


def strided_dwconv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, padding: int
) -> torch.Tensor:
    """Depthwise convolution with a stride (the models' downsampling layers): ``F.conv2d(..., groups=C)``.

    On the CPU in bf16 with bf16 hardware, the backward computes grad_input as a stride-1 oneDNN forward on the
    zero-inserted output gradient: oneDNN's own bf16 strided depthwise backward-data is its generic grouped
    ``brgconv_strided`` kernel (ONEDNN_VERBOSE), 4-27x slower than that (RepLKNet-31B's 3x3 stride-2 layers at
    B = 8: 48-86 ms each against 2-23 ms), where float32 has a dedicated depthwise kernel. Everywhere else this is
    plain ``F.conv2d``.
    """
    if x.device.type != "cpu":
        return F.conv2d(x, weight, bias, stride=stride, padding=padding, groups=x.shape[1])
    x, weight, bias = _autocast_inputs(x, weight, bias)
    if x.dtype != torch.bfloat16 or matrix_dtype(x.dtype) != torch.bfloat16:
        return F.conv2d(x, weight, bias, stride=stride, padding=padding, groups=x.shape[1])
    with torch.autocast(x.device.type, enabled=False):
        return _StridedDepthwiseConv.apply(x, weight, bias, stride, padding)


register_impl("native_nchw", native_nchw_dwconv2d)
register_impl("native_cl", native_cl_dwconv2d)
register_impl("fft", fft_dwconv2d)
register_impl("hybrid", hybrid_dwconv2d)
register_impl("toeplitz", toeplitz_dwconv2d)


# NOTE: oneDNN's dedicated NCHW depthwise forward kernel (jit_dw) covers K <= 13 with AVX-512 (fp32 and bf16,
# ONEDNN_VERBOSE on the AVX512-BF16 machine: K = 15 runs its GEMM path) and K <= 9 with AVX2 (measured on the
# earlier AVX2 machine); beyond that, and for grad_weight at every K > 3 (on AVX-512 already at K = 9), oneDNN
# falls back to a GEMM path at a few GFLOP/s, which is why the native paths are only chosen for small kernels.
# The thresholds are the crossovers measured by benchmarks/dwconv.py --calibrate (tables in docs/ops.md).
_AVX512 = torch.backends.cpu.get_cpu_capability().startswith("AVX512")
_NCHW_FORWARD_MAX_KERNEL = 13 if _AVX512 else 9

# NOTE: oneDNN's channels_last depthwise forward (brdgmm) is slower at K = 13 than at K = 11 on AVX-512, and
# channels_last input with K = 12..13 ran faster through jit_dw with its layout copies (1.1-1.8x forward, 2x in
# the hybrid; benchmarks/dwconv_unireplknet.py, docs/ops.md "UniRepLKNet's kernel sizes").
_CL_BRDGMM_MAX_KERNEL = 11


def _nchw_forward(kernel_size: int, nchw_input: bool) -> bool:
    """oneDNN's forward runs fastest in NCHW (jit_dw): NCHW input within its K, channels_last input above brdgmm's."""
    return kernel_size <= _NCHW_FORWARD_MAX_KERNEL and (nchw_input or kernel_size > _CL_BRDGMM_MAX_KERNEL)


def _fft_wins(kernel_size: int, pixels: int, nchw_input: bool, bf16: bool) -> bool:
    """The chunked FFT beats oneDNN and the hybrid (large kernels on large planes; measured, docs/ops.md).

    56x56 planes: from K = 13 where oneDNN's NCHW kernel stops (K = 13 on AVX-512 is level with it in training and
    behind it in inference). 28x28 planes, K >= 17: only for float32 NCHW input (level with the hybrid, and with
    oneDNN's forward); on channels_last input the FFT's layout copies put it behind (28x28 under 29x29, B = 8,
    one thread: forward + backward 93 vs 84 ms, forward 34 vs 23 ms), and in bf16 oneDNN runs bf16 (79 vs 97 ms,
    21 vs 32 ms).
    """
    if pixels >= 56 * 56:
        return kernel_size >= 13 and kernel_size > _NCHW_FORWARD_MAX_KERNEL
    return kernel_size >= 17 and pixels >= 28 * 28 and nchw_input and not bf16


# NOTE: the Toeplitz matrices cost C (H W)^2 floats per call whatever the batch, so the batch has to amortise them;
# only where the kernel covers the plane (H W <= K^2 / 2: the matrices are smaller than the direct method's work),
# where oneDNN's NCHW kernel does not cover K (7x7 under 13x13 on AVX-512 runs jit_dw forward and the hybrid's
# Toeplitz grad_weight, 1.3-2x faster), and only for NCHW input (on channels_last input its layout copies cost more
# than oneDNN's channels_last kernel, which needs none). Against the hybrid with its swapped-role grad_weight and
# oneDNN's forward (CPU time, one thread, 14x14 under 27x27): forward + backward 50 vs 31 ms at B = 8, 92 vs 102
# ms at B = 32 in float32, 52 vs 31 and 75 vs 90 ms in bf16; forward 14.6 vs 8.5 ms at B = 8, 28.7 vs 31.6 ms at
# B = 32 (float32). Hence B >= 24 with one thread. Two threads: the earlier float32 thresholds moved by x1.5-1.7
# from one thread to two (oneDNN scales better over threads than the memory-bound matrix build); that factor is
# assumed here, not re-measured. More threads keep the two-thread threshold.
_TOEPLITZ_MAX_PLANE = 196
_TOEPLITZ_MIN_BATCH = {1: 24, 2: 36}  # by intra-op thread count


def _toeplitz_wins(kernel_size: int, pixels: int, batch: int) -> bool:
    if kernel_size <= _NCHW_FORWARD_MAX_KERNEL or pixels > min(_TOEPLITZ_MAX_PLANE, kernel_size * kernel_size // 2):
        return False
    return batch >= _TOEPLITZ_MIN_BATCH[min(torch.get_num_threads(), 2)]


def cpu_auto_rule(x: torch.Tensor, weight: torch.Tensor) -> str:
    """The implementation ``impl="auto"`` uses on CPU (measured crossovers, docs/ops.md).

    Keys: kernel size, pixels per plane, batch size, intra-op threads, the input's memory format, whether a
    gradient will be needed, and whether the passes run in bf16 (bf16 tensors on bf16 hardware).
    """
    kernel_size = weight.shape[-1]
    pixels = x.shape[-2] * x.shape[-1]
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    nchw_input = _memory_format(x) == torch.contiguous_format
    bf16 = matrix_dtype(x.dtype) == torch.bfloat16
    if _fft_wins(kernel_size, pixels, nchw_input, bf16):
        return "fft"
    if nchw_input and _toeplitz_wins(kernel_size, pixels, x.shape[0]):
        return "toeplitz"
    if needs_grad:
        # NOTE: aten's grad_weight is oneDNN's GEMM path for every K > 3; the hybrid replaces it from K = 5 on (the
        # 5x5 re-param branches: 2.5-4x faster forward + backward than the better native layout, bf16 and fp32)
        if kernel_size <= 3:
            return "native_nchw" if nchw_input else "native_cl"
        return "hybrid"
    if _nchw_forward(kernel_size, nchw_input):
        return "native_nchw"
    return "native_cl"


register_auto_rule("cpu", cpu_auto_rule)
