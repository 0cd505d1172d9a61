"""Triton kernels for the stride-1, same-padded depthwise convolution: forward, grad_input, grad_weight.

Imported only on first use (it imports triton); ``replknet.ops.triton_dwconv`` is the cheap front door.

Design (direct method, accumulation in fp32 whatever the storage dtype):

* forward: one program computes a ``(BLOCK_C channels) x (BLOCK_H x BLOCK_W pixels)`` output tile of one image
  and loops over only those of the ``K x K`` taps that reach the image for some pixel of the tile (in the small
  late-stage maps most taps fall in the padding). Strides are arguments, so NCHW and channels_last share the
  kernel; their tile shapes differ (NCHW tiles run along W, channels_last tiles run along C, the contiguous axis).
* grad_input: the forward kernel over the output gradient with the kernel rotated by 180 degrees (``FLIP``).
* grad_weight: a reduction over batch and space. One program owns ``BLOCK_C`` channels x ``BLOCK_T`` taps and
  every ``SPLIT``-th chunk of ``BLOCK_P`` flattened ``(n, h, w)`` pixels; the ``SPLIT`` partial sums go to a fp32
  buffer that is summed afterwards (a split reduction: enough programs to fill the GPU, and deterministic).

On a GPU every launch is autotuned (``triton.autotune``) per shape; under ``TRITON_INTERPRET=1`` (CPU tests) one
small fixed configuration is used so that tiles, masks and the split reduction are all exercised.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from replknet.ops.triton_dwconv import memory_format_of

INTERPRET = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")


# NOTE: shape and row/batch-stride arguments are not specialised (no recompiles per divisibility-by-16 pattern);
# shifted taps are unaligned anyway. Channel and column strides stay specialised (== 1 gives contiguous loads).
@triton.jit(do_not_specialize=["N", "C", "H", "W", "K", "PAD", "sxn", "sxh", "syn", "syh"])
def _dwconv_tile_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    y_ptr,
    N,
    C,
    H,
    W,
    K,
    PAD,
    sxn,
    sxc,
    sxh,
    sxw,
    syn,
    syc,
    syh,
    syw,
    FLIP: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    """y[n, c, oh, ow] = sum_{kh, kw} x[n, c, oh + kh - PAD, ow + kw - PAD] * w[c, kh, kw] (+ b[c]).

    With FLIP the tap (kh, kw) reads w[c, K - 1 - kh, K - 1 - kw]: the input gradient of the same convolution.
    The grid is (tiles of H x W, blocks of C, N); ``N`` itself only keys the autotuning.
    """
    pid_tile = tl.program_id(0)
    pid_c = tl.program_id(1)
    pid_n = tl.program_id(2).to(tl.int64)
    tiles_w = tl.cdiv(W, BLOCK_W)
    h0 = (pid_tile // tiles_w) * BLOCK_H
    w0 = (pid_tile % tiles_w) * BLOCK_W

    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)  # (BLOCK_C,)
    offs_p = tl.arange(0, BLOCK_H * BLOCK_W)  # (BLOCK_P,) pixels of the tile, row-major
    oh = h0 + offs_p // BLOCK_W
    ow = w0 + offs_p % BLOCK_W
    c_mask = offs_c < C
    p_mask = (oh < H) & (ow < W)

    x_chan = x_ptr + pid_n * sxn + offs_c.to(tl.int64)[:, None] * sxc  # (BLOCK_C, 1)
    w_chan = w_ptr + offs_c * (K * K)  # (BLOCK_C,)
    acc = tl.zeros((BLOCK_C, BLOCK_H * BLOCK_W), dtype=tl.float32)

    # Only taps that land on the image for at least one pixel of the tile.
    h_last = tl.minimum(h0 + BLOCK_H, H) - 1
    w_last = tl.minimum(w0 + BLOCK_W, W) - 1
    kh_lo = tl.maximum(PAD - h_last, 0)
    kh_hi = tl.minimum(H + PAD - h0, K)
    kw_lo = tl.maximum(PAD - w_last, 0)
    kw_hi = tl.minimum(W + PAD - w0, K)
    for kh in range(kh_lo, kh_hi):
        ih = oh + (kh - PAD)
        row_ok = c_mask[:, None] & ((ih >= 0) & (ih < H))[None, :]
        x_row = x_chan + (ih * sxh)[None, :]  # (BLOCK_C, BLOCK_P) pointers to the row of each pixel
        if FLIP:
            w_row = w_chan + ((K - 1 - kh) * K + (K - 1))
        else:
            w_row = w_chan + kh * K
        for kw in range(kw_lo, kw_hi):
            iw = ow + (kw - PAD)
            ok = row_ok & ((iw >= 0) & (iw < W))[None, :]
            if FLIP:
                wv = tl.load(w_row - kw, mask=c_mask, other=0.0)
            else:
                wv = tl.load(w_row + kw, mask=c_mask, other=0.0)
            xv = tl.load(x_row + (iw * sxw)[None, :], mask=ok, other=0.0)
            acc += xv.to(tl.float32) * wv.to(tl.float32)[:, None]

    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_c, mask=c_mask, other=0.0).to(tl.float32)[:, None]
    y_off = pid_n * syn + offs_c.to(tl.int64)[:, None] * syc + (oh * syh + ow * syw)[None, :]
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=c_mask[:, None] & p_mask[None, :])


@triton.jit(do_not_specialize=["N", "C", "H", "W", "K", "PAD", "sxn", "sxh", "sgn", "sgh", "SPLIT"])
def _dwconv_weight_grad_kernel(
    x_ptr,
    g_ptr,
    part_ptr,
    N,
    C,
    H,
    W,
    K,
    PAD,
    sxn,
    sxc,
    sxh,
    sxw,
    sgn,
    sgc,
    sgh,
    sgw,
    SPLIT,
    BLOCK_C: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    """part[s, c, t] = sum over pixels p = (n, oh, ow) of chunks s, s + SPLIT, ... of g[n, c, oh, ow] * x[tap t]."""
    pid_c = tl.program_id(0)
    pid_t = tl.program_id(1)
    pid_s = tl.program_id(2)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)  # (BLOCK_C,)
    offs_t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)  # (BLOCK_T,) flattened taps kh * K + kw
    c_mask = offs_c < C
    t_mask = offs_t < K * K
    dh = offs_t // K - PAD
    dw = offs_t % K - PAD
    c64 = offs_c.to(tl.int64)

    hw = H * W
    total = N * hw
    num_chunks = tl.cdiv(total, BLOCK_P)
    acc = tl.zeros((BLOCK_C, BLOCK_T, BLOCK_P), dtype=tl.float32)
    for chunk in range(pid_s, num_chunks, SPLIT):
        p = (chunk * BLOCK_P + tl.arange(0, BLOCK_P)).to(tl.int64)  # (BLOCK_P,) flattened (n, oh, ow)
        p_mask = p < total
        n = p // hw
        rem = p % hw
        oh = rem // W
        ow = rem % W
        g_off = c64[:, None] * sgc + (n * sgn + oh * sgh + ow * sgw)[None, :]
        g = tl.load(g_ptr + g_off, mask=c_mask[:, None] & p_mask[None, :], other=0.0).to(tl.float32)
        ih = oh[None, :] + dh[:, None]  # (BLOCK_T, BLOCK_P)
        iw = ow[None, :] + dw[:, None]
        ok = t_mask[:, None] & p_mask[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        x_off = c64[:, None, None] * sxc + (n[None, :] * sxn + ih * sxh + iw * sxw)[None, :, :]
        xv = tl.load(x_ptr + x_off, mask=c_mask[:, None, None] & ok[None, :, :], other=0.0).to(tl.float32)
        acc += xv * g[:, None, :]

    part = tl.sum(acc, axis=2)  # (BLOCK_C, BLOCK_T)
    out_off = pid_s.to(tl.int64) * C * K * K + c64[:, None] * (K * K) + offs_t[None, :]
    tl.store(part_ptr + out_off, part, mask=c_mask[:, None] & t_mask[None, :])


def _prune_tile_configs(configs: list, named_args: dict, **kwargs) -> list:
    """Drop tiles more than twice as large as the image in a dimension, or wider than the channel count."""
    height, width, channels = named_args["H"], named_args["W"], named_args["C"]
    kept = [
        config
        for config in configs
        if config.kwargs["BLOCK_H"] < 2 * height
        and config.kwargs["BLOCK_W"] < 2 * width
        and config.kwargs["BLOCK_C"] < 2 * channels
    ]
    return kept or configs[:1]


def _tile_config(block_c: int, block_h: int, block_w: int, num_warps: int) -> triton.Config:
    return triton.Config({"BLOCK_C": block_c, "BLOCK_H": block_h, "BLOCK_W": block_w}, num_warps=num_warps)


# NOTE: candidates picked for Hopper from first principles (not yet measured on the H200): NCHW tiles run
# along W for coalesced loads; channels_last tiles put 16-64 channels on the contiguous axis.
_TILE_CONFIGS_NCHW = [
    _tile_config(1, 8, 32, 4),
    _tile_config(1, 16, 32, 4),
    _tile_config(1, 16, 64, 8),
    _tile_config(2, 8, 16, 4),
    _tile_config(4, 8, 8, 4),
    _tile_config(8, 4, 8, 4),
    _tile_config(16, 4, 4, 4),
]
_TILE_CONFIGS_CHANNELS_LAST = [
    _tile_config(16, 4, 8, 4),
    _tile_config(32, 4, 4, 4),
    _tile_config(32, 2, 8, 4),
    _tile_config(64, 2, 4, 4),
    _tile_config(64, 4, 4, 8),
    _tile_config(128, 2, 2, 4),
]


def _wgrad_config(block_c: int, block_t: int, block_p: int, num_warps: int) -> triton.Config:
    return triton.Config({"BLOCK_C": block_c, "BLOCK_T": block_t, "BLOCK_P": block_p}, num_warps=num_warps)


_WGRAD_CONFIGS_NCHW = [
    _wgrad_config(1, 16, 128, 4),
    _wgrad_config(1, 32, 128, 8),
    _wgrad_config(1, 8, 256, 4),
    _wgrad_config(2, 16, 64, 4),
]
_WGRAD_CONFIGS_CHANNELS_LAST = [
    _wgrad_config(32, 8, 16, 4),
    _wgrad_config(64, 8, 8, 4),
    _wgrad_config(16, 16, 16, 4),
    _wgrad_config(32, 16, 8, 8),
]

# The batch is part of the key: the best tile for a full H200 differs from the best one for a batch of 2.
_TILE_KEY = ["C", "H", "W", "K", "N"]
_WGRAD_KEY = ["N", "C", "H", "W", "K"]

if INTERPRET:
    # One small configuration: several tiles per image, several channel blocks, and SPLIT > 1.
    _INTERPRET_TILE = {"BLOCK_C": 2, "BLOCK_H": 8, "BLOCK_W": 8}
    _INTERPRET_WGRAD = {"BLOCK_C": 2, "BLOCK_T": 16, "BLOCK_P": 32}
    _tile_nchw = _tile_channels_last = _dwconv_tile_kernel
    _wgrad_nchw = _wgrad_channels_last = _dwconv_weight_grad_kernel
else:
    _INTERPRET_TILE = _INTERPRET_WGRAD = {}
    _tile_nchw = triton.autotune(
        _TILE_CONFIGS_NCHW, key=_TILE_KEY, prune_configs_by={"early_config_prune": _prune_tile_configs}
    )(_dwconv_tile_kernel)
    _tile_channels_last = triton.autotune(
        _TILE_CONFIGS_CHANNELS_LAST, key=_TILE_KEY, prune_configs_by={"early_config_prune": _prune_tile_configs}
    )(_dwconv_tile_kernel)
    _wgrad_nchw = triton.autotune(_WGRAD_CONFIGS_NCHW, key=_WGRAD_KEY)(_dwconv_weight_grad_kernel)
    _wgrad_channels_last = triton.autotune(_WGRAD_CONFIGS_CHANNELS_LAST, key=_WGRAD_KEY)(_dwconv_weight_grad_kernel)


def _tile_launch(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, flip: bool, channels_last: bool
) -> torch.Tensor:
    """Run the tile kernel; ``x`` must already be dense in the layout named by ``channels_last``."""
    batch, channels, height, width = x.shape
    kernel_size = weight.shape[-1]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    y = torch.empty_like(x, memory_format=fmt)
    weight = weight.contiguous()
    kernel = _tile_channels_last if channels_last else _tile_nchw

    def grid(meta: dict) -> tuple[int, int, int]:
        tiles = triton.cdiv(height, meta["BLOCK_H"]) * triton.cdiv(width, meta["BLOCK_W"])
        return (tiles, triton.cdiv(channels, meta["BLOCK_C"]), batch)

    kernel[grid](
        x,
        weight,
        bias if bias is not None else weight,  # never read when HAS_BIAS is False
        y,
        batch,
        channels,
        height,
        width,
        kernel_size,
        kernel_size // 2,
        *x.stride(),
        *y.stride(),
        FLIP=flip,
        HAS_BIAS=bias is not None,
        **_INTERPRET_TILE,
    )
    return y


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1


def _split_count(x: torch.Tensor, kernel_size: int, channels_last: bool) -> int:
    """How many partial sums the weight-gradient reduction is split into (enough programs to fill the GPU)."""
    batch, channels, height, width = x.shape
    if INTERPRET:
        return 2
    nominal_c = 32 if channels_last else 1  # typical BLOCK_C / BLOCK_T of the configs above
    nominal_programs = triton.cdiv(channels, nominal_c) * triton.cdiv(kernel_size * kernel_size, 16)
    target = 4 * _num_sms(x.device)
    chunks = triton.cdiv(batch * height * width, 128)
    return max(1, min(chunks, triton.cdiv(target, nominal_programs), 256))


def _weight_grad_launch(x: torch.Tensor, grad_out: torch.Tensor, kernel_size: int, channels_last: bool) -> torch.Tensor:
    """fp32 weight gradient ``(C, 1, K, K)`` of the convolution, from ``x`` and the output gradient."""
    batch, channels, height, width = x.shape
    split = _split_count(x, kernel_size, channels_last)
    taps = kernel_size * kernel_size
    partial = torch.empty((split, channels, taps), device=x.device, dtype=torch.float32)
    kernel = _wgrad_channels_last if channels_last else _wgrad_nchw

    def grid(meta: dict) -> tuple[int, int, int]:
        return (triton.cdiv(channels, meta["BLOCK_C"]), triton.cdiv(taps, meta["BLOCK_T"]), split)

    kernel[grid](
        x,
        grad_out,
        partial,
        batch,
        channels,
        height,
        width,
        kernel_size,
        kernel_size // 2,
        *x.stride(),
        *grad_out.stride(),
        split,
        **_INTERPRET_WGRAD,
    )
    return partial.sum(dim=0).view(channels, 1, kernel_size, kernel_size)


class TritonDepthwiseConv2dFunction(torch.autograd.Function):
    """Autograd function: Triton forward, grad_input and grad_weight; the bias gradient is a plain reduction."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:  # type: ignore[override]
        fmt = memory_format_of(x)
        x = x.contiguous(memory_format=fmt)
        channels_last = fmt == torch.channels_last
        ctx.save_for_backward(x, weight)
        ctx.channels_last = channels_last
        ctx.has_bias = bias is not None
        return _tile_launch(x, weight, bias, flip=False, channels_last=channels_last)  # (N, C, H, W), x's layout

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        fmt = torch.channels_last if ctx.channels_last else torch.contiguous_format
        grad_out = grad_out.contiguous(memory_format=fmt)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _tile_launch(grad_out, weight, None, flip=True, channels_last=ctx.channels_last)
        if ctx.needs_input_grad[1]:
            grad_w = _weight_grad_launch(x, grad_out, weight.shape[-1], ctx.channels_last).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum(dim=(0, 2, 3), dtype=torch.float32).to(weight.dtype)
        return grad_x, grad_w, grad_b


def dwconv2d_triton_kernels(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Apply the autograd function (inputs already validated, same dtype and device)."""
    return TritonDepthwiseConv2dFunction.apply(x, weight, bias)
