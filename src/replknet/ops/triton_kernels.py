"""Triton kernels for the stride-1, same-padded depthwise convolution: forward, grad_input, grad_weight.

Imported only on first use (it imports triton); ``replknet.ops.triton_dwconv`` is the cheap front door.

Two methods per convolution, both accumulating in fp32 whatever the storage dtype; a compile-time flag
(``USE_DOT``) in each kernel selects one, and it is part of the autotune search, so the faster wins per shape:

* forward, direct: one program computes a ``(BLOCK_C channels) x (BLOCK_H x BLOCK_W pixels)`` output tile of one
  image and loops over only those of the ``K x K`` taps that reach the image for some pixel of the tile. Strides
  are arguments, so NCHW and channels_last share the kernel; their tile shapes differ (NCHW tiles run along W,
  channels_last tiles run along C, the contiguous axis).
* forward, dot (implicit GEMM on tensor cores): per kernel row, (input rows x window) @ (banded Toeplitz matrix
  of that weight row); see ``_tile_dot``.
* grad_input: the forward kernel over the output gradient with the kernel rotated by 180 degrees (``FLIP``).
* grad_weight, direct: one program owns ``BLOCK_C`` channels x ``BLOCK_T`` taps and every ``SPLIT``-th chunk of
  ``BLOCK_P`` flattened ``(n, h, w)`` pixels. grad_weight, dot: per input row, (output-gradient rows, reversed) @
  (Hankel window of the input row); see ``_wgrad_dot``. Either way the ``SPLIT`` partial sums go to a fp32
  buffer that is summed afterwards (a split reduction: enough programs to fill the GPU, and deterministic).

On a GPU every launch is autotuned (``triton.autotune``) per shape; under ``TRITON_INTERPRET=1`` (CPU tests) one
small fixed configuration of the path named by ``INTERPRET_PATH`` is used, so that tiles, masks and the split
reduction are all exercised.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
import triton.testing

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
    USE_DOT: tl.constexpr,
    WIN: tl.constexpr,
    DOT_IEEE: tl.constexpr,
):
    """y[n, c, oh, ow] = sum_{kh, kw} x[n, c, oh + kh - PAD, ow + kw - PAD] * w[c, kh, kw] (+ b[c]).

    With FLIP the tap (kh, kw) reads w[c, K - 1 - kh, K - 1 - kw]: the input gradient of the same convolution.
    The grid is (tiles of H x W, blocks of C, N); ``N`` itself only keys the autotuning. With USE_DOT (BLOCK_C
    must be 1 and WIN >= BLOCK_W + K - 1) each kernel row is a matrix product on the tensor cores.
    """
    if USE_DOT:
        _tile_dot(
            x_ptr, w_ptr, b_ptr, y_ptr, H, W, K, PAD, sxn, sxc, sxh, sxw, syn, syc, syh, syw,
            FLIP, HAS_BIAS, BLOCK_H, BLOCK_W, WIN, DOT_IEEE,
        )  # fmt: skip
    else:
        _tile_direct(
            x_ptr, w_ptr, b_ptr, y_ptr, C, H, W, K, PAD, sxn, sxc, sxh, sxw, syn, syc, syh, syw,
            FLIP, HAS_BIAS, BLOCK_C, BLOCK_H, BLOCK_W,
        )  # fmt: skip


@triton.jit
def _tile_dot(
    x_ptr, w_ptr, b_ptr, y_ptr, H, W, K, PAD, sxn, sxc, sxh, sxw, syn, syc, syh, syw,
    FLIP: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, WIN: tl.constexpr,
    DOT_IEEE: tl.constexpr,
):  # fmt: skip
    """Implicit GEMM per kernel row: out[r, o] += sum_j x[r + kh - PAD, w0 - PAD + j] * T_kh[j, o], where the
    banded (Toeplitz) matrix T_kh[j, o] = w[kh, j - o] for 0 <= j - o < K, else 0."""
    pid_tile = tl.program_id(0)
    channel = tl.program_id(1).to(tl.int64)
    pid_n = tl.program_id(2).to(tl.int64)
    tiles_w = tl.cdiv(W, BLOCK_W)
    h0 = (pid_tile // tiles_w) * BLOCK_H
    w0 = (pid_tile % tiles_w) * BLOCK_W
    rows = h0 + tl.arange(0, BLOCK_H)  # output rows
    cols = w0 + tl.arange(0, BLOCK_W)  # output columns
    window = tl.arange(0, WIN)
    in_cols = w0 - PAD + window  # the input columns the tile's rows need
    col_ok = (in_cols >= 0) & (in_cols < W)
    tap = window[:, None] - tl.arange(0, BLOCK_W)[None, :]  # (WIN, BLOCK_W): kw of input column j for output o
    band = (tap >= 0) & (tap < K)
    x_chan = x_ptr + pid_n * sxn + channel * sxc
    w_chan = w_ptr + channel * K * K
    acc = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
    h_last = tl.minimum(h0 + BLOCK_H, H) - 1
    kh_lo = tl.maximum(PAD - h_last, 0)
    kh_hi = tl.minimum(H + PAD - h0, K)
    for kh in range(kh_lo, kh_hi):
        ih = rows + (kh - PAD)
        x_mask = ((ih >= 0) & (ih < H))[:, None] & col_ok[None, :]
        xt = tl.load(x_chan + (ih * sxh)[:, None] + (in_cols * sxw)[None, :], mask=x_mask, other=0.0)  # (BH, WIN)
        if FLIP:
            toeplitz = tl.load(w_chan + ((K - 1 - kh) * K + K - 1) - tap, mask=band, other=0.0)
        else:
            toeplitz = tl.load(w_chan + kh * K + tap, mask=band, other=0.0)  # (WIN, BLOCK_W)
        if DOT_IEEE:
            acc = tl.dot(xt.to(tl.float32), toeplitz.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(xt, toeplitz, acc)
    if HAS_BIAS:
        acc += tl.load(b_ptr + channel).to(tl.float32)
    y_off = pid_n * syn + channel * syc + (rows * syh)[:, None] + (cols * syw)[None, :]
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=(rows < H)[:, None] & (cols < W)[None, :])


@triton.jit
def _tile_direct(
    x_ptr, w_ptr, b_ptr, y_ptr, C, H, W, K, PAD, sxn, sxc, sxh, sxw, syn, syc, syh, syw,
    FLIP: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):  # fmt: skip
    """Direct method: one FMA per tap and pixel, for BLOCK_C channels at once."""
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
    USE_DOT: tl.constexpr,
    KPAD: tl.constexpr,
    DOT_W: tl.constexpr,
    DOT_IEEE: tl.constexpr,
):
    """part[s, c, t]: the share of split s of the weight gradient of channel c at tap t = kh * K + kw.

    Direct method: sum over pixels p = (n, oh, ow) of chunks s, s + SPLIT, ... of g[n, c, oh, ow] * x[tap t]. With
    USE_DOT (grid (C, 1, SPLIT), KPAD >= K): a (KPAD x KPAD) matrix product per input row (see ``_wgrad_dot``).
    """
    if USE_DOT:
        _wgrad_dot(
            x_ptr, g_ptr, part_ptr, N, C, H, W, K, PAD, sxn, sxc, sxh, sxw, sgn, sgc, sgh, sgw, SPLIT,
            KPAD, DOT_W, DOT_IEEE,
        )  # fmt: skip
    else:
        _wgrad_direct(
            x_ptr, g_ptr, part_ptr, N, C, H, W, K, PAD, sxn, sxc, sxh, sxw, sgn, sgc, sgh, sgw, SPLIT,
            BLOCK_C, BLOCK_T, BLOCK_P,
        )  # fmt: skip


@triton.jit
def _wgrad_dot(
    x_ptr, g_ptr, part_ptr, N, C, H, W, K, PAD, sxn, sxc, sxh, sxw, sgn, sgc, sgh, sgw, SPLIT,
    KPAD: tl.constexpr, DOT_W: tl.constexpr, DOT_IEEE: tl.constexpr,
):  # fmt: skip
    """For every input row ih of every image: dW[kh, kw] += sum_q g[ih - kh + PAD, q] * x[ih, q + kw - PAD],
    i.e. (rows of g gathered in reverse, KPAD x DOT_W) @ (a Hankel window of the x row, DOT_W x KPAD)."""
    channel = tl.program_id(0).to(tl.int64)
    pid_s = tl.program_id(2)
    taps = tl.arange(0, KPAD)
    tap_ok = taps < K
    q = tl.arange(0, DOT_W)
    x_chan = x_ptr + channel * sxc
    g_chan = g_ptr + channel * sgc
    acc = tl.zeros((KPAD, KPAD), dtype=tl.float32)
    for pair in range(pid_s, N * H, SPLIT):
        n = tl.zeros([], dtype=tl.int64) + pair // H
        ih = pair % H
        oh = ih - taps + PAD  # (KPAD,) output row that meets input row ih through kernel row kh
        oh_ok = tap_ok & (oh >= 0) & (oh < H)
        x_row = x_chan + n * sxn + ih * sxh
        g_img = g_chan + n * sgn
        for w0 in range(0, W, DOT_W):
            ow = w0 + q  # (DOT_W,) output columns
            ow_ok = ow < W
            g_mask = oh_ok[:, None] & ow_ok[None, :]
            gt = tl.load(g_img + (oh * sgh)[:, None] + (ow * sgw)[None, :], mask=g_mask, other=0.0)  # (KPAD, DOT_W)
            iw = ow[:, None] + (taps - PAD)[None, :]  # (DOT_W, KPAD)
            x_mask = ow_ok[:, None] & tap_ok[None, :] & (iw >= 0) & (iw < W)
            hankel = tl.load(x_row + iw * sxw, mask=x_mask, other=0.0)
            if DOT_IEEE:
                acc = tl.dot(gt.to(tl.float32), hankel.to(tl.float32), acc, input_precision="ieee")
            else:
                acc = tl.dot(gt, hankel, acc)
    out_off = pid_s.to(tl.int64) * C * K * K + channel * K * K + taps[:, None] * K + taps[None, :]
    tl.store(part_ptr + out_off, acc, mask=tap_ok[:, None] & tap_ok[None, :])


@triton.jit
def _wgrad_direct(
    x_ptr, g_ptr, part_ptr, N, C, H, W, K, PAD, sxn, sxc, sxh, sxw, sgn, sgc, sgh, sgw, SPLIT,
    BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    """Direct method: every tap of a BLOCK_C x BLOCK_T block against BLOCK_P pixels at a time."""
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
    """Keep tiles at most about twice the image (16, the smallest dot tile, always fits) and channel blocks at most
    about twice the channels; a dot config needs its input window to cover BLOCK_W + K - 1 columns."""
    height, width, channels, kernel_size = named_args["H"], named_args["W"], named_args["C"], named_args["K"]
    kept = []
    for config in configs:
        meta = config.kwargs
        if meta["USE_DOT"]:
            need = meta["BLOCK_W"] + kernel_size - 1
            fits = meta["WIN"] >= need and meta["WIN"] < 2 * need
            fits = fits and (meta["BLOCK_H"] < 2 * height or meta["BLOCK_H"] == 16)
            fits = fits and (meta["BLOCK_W"] < 2 * width or meta["BLOCK_W"] == 16)
        else:
            fits = meta["BLOCK_H"] < 2 * height and meta["BLOCK_W"] < 2 * width and meta["BLOCK_C"] < 2 * channels
        if fits:
            kept.append(config)
    return kept or [c for c in configs if not c.kwargs["USE_DOT"]][:1]


def _prune_wgrad_configs(configs: list, named_args: dict, **kwargs) -> list:
    """A dot config needs KPAD >= K (and not more than twice K, 16 being the smallest)."""
    kernel_size = named_args["K"]
    kept = [
        c
        for c in configs
        if not c.kwargs["USE_DOT"]
        or (c.kwargs["KPAD"] >= kernel_size and (c.kwargs["KPAD"] < 2 * kernel_size or c.kwargs["KPAD"] == 16))
    ]
    return kept or [c for c in configs if not c.kwargs["USE_DOT"]][:1]


def _tile_config(block_c: int, block_h: int, block_w: int, num_warps: int, win: int = 0) -> triton.Config:
    meta = {"BLOCK_C": block_c, "BLOCK_H": block_h, "BLOCK_W": block_w, "USE_DOT": win > 0, "WIN": max(win, 16)}
    return triton.Config(meta, num_warps=num_warps)


# NOTE: candidates picked for Hopper from first principles (not yet measured on the H200): NCHW tiles run
# along W for coalesced loads; channels_last tiles put 16-64 channels on the contiguous axis; the dot tiles
# (win > 0) trade up to ~2x wasted multiply-adds in the banded matrix for tensor cores and fewer loads.
_DOT_TILES = [
    _tile_config(1, 64, 32, 4, win=64),
    _tile_config(1, 32, 32, 4, win=64),
    _tile_config(1, 16, 16, 4, win=32),
    _tile_config(1, 16, 16, 4, win=64),
    _tile_config(1, 32, 64, 8, win=128),
]
_TILE_CONFIGS_NCHW = [
    _tile_config(1, 8, 32, 4),
    _tile_config(1, 16, 32, 4),
    _tile_config(4, 8, 8, 4),
    _tile_config(16, 4, 4, 4),
    *_DOT_TILES,
]
_TILE_CONFIGS_CHANNELS_LAST = [
    _tile_config(16, 4, 8, 4),
    _tile_config(32, 4, 4, 4),
    _tile_config(64, 2, 4, 4),
    _tile_config(64, 4, 4, 8),
    *_DOT_TILES,
]


def _wgrad_config(block_c: int, block_t: int, block_p: int, num_warps: int, kpad: int = 0, dot_w: int = 32):
    meta = {"BLOCK_C": block_c, "BLOCK_T": block_t, "BLOCK_P": block_p, "USE_DOT": kpad > 0}
    meta.update({"KPAD": max(kpad, 16), "DOT_W": dot_w})
    return triton.Config(meta, num_warps=num_warps)


_DOT_WGRAD = [
    _wgrad_config(1, 16, 16, 4, kpad=16, dot_w=64),
    _wgrad_config(1, 16, 16, 4, kpad=32, dot_w=64),
    _wgrad_config(1, 16, 16, 8, kpad=64, dot_w=64),
    _wgrad_config(1, 16, 16, 4, kpad=64, dot_w=32),
]
_WGRAD_CONFIGS_NCHW = [
    _wgrad_config(1, 16, 128, 4),
    _wgrad_config(1, 32, 128, 8),
    _wgrad_config(2, 16, 64, 4),
    *_DOT_WGRAD,
]
_WGRAD_CONFIGS_CHANNELS_LAST = [
    _wgrad_config(32, 8, 16, 4),
    _wgrad_config(64, 8, 8, 4),
    _wgrad_config(16, 16, 16, 4),
    *_DOT_WGRAD,
]

# The batch is part of the key: the best tile for a full H200 differs from the best one for a batch of 2.
_TILE_KEY = ["C", "H", "W", "K", "N"]
_WGRAD_KEY = ["N", "C", "H", "W", "K"]

# Under the interpreter: one fixed configuration per launch, "direct" or "dot" (tests set this to check both).
INTERPRET_PATH = "direct"

if INTERPRET:
    _tile_nchw = _tile_channels_last = _dwconv_tile_kernel
    _wgrad_nchw = _wgrad_channels_last = _dwconv_weight_grad_kernel
else:

    def _quick_bench(kernel_call, quantiles):
        # NOTE: shorter than triton's default (25 ms warm-up, 100 ms timing) so a new shape tunes in ~1 s, not ~5 s
        return triton.testing.do_bench(kernel_call, warmup=5, rep=25, quantiles=quantiles)

    def _autotuned(configs: list, key: list[str], prune) -> object:
        return triton.autotune(configs, key=key, prune_configs_by={"early_config_prune": prune}, do_bench=_quick_bench)

    _tile_nchw = _autotuned(_TILE_CONFIGS_NCHW, _TILE_KEY, _prune_tile_configs)(_dwconv_tile_kernel)
    _tile_channels_last = _autotuned(_TILE_CONFIGS_CHANNELS_LAST, _TILE_KEY, _prune_tile_configs)(_dwconv_tile_kernel)
    _wgrad_nchw = _autotuned(_WGRAD_CONFIGS_NCHW, _WGRAD_KEY, _prune_wgrad_configs)(_dwconv_weight_grad_kernel)
    _wgrad_channels_last = _autotuned(_WGRAD_CONFIGS_CHANNELS_LAST, _WGRAD_KEY, _prune_wgrad_configs)(
        _dwconv_weight_grad_kernel
    )


def _dot_ieee(dtype: torch.dtype) -> bool:
    """Whether the dot path multiplies in exact fp32 (``input_precision="ieee"``) rather than natively.

    NOTE: fp32 products must stay fp32 (TF32 would cost ~1e-3 relative error). bf16 is upcast only under the
    interpreter, whose bf16 ``tl.dot`` returns garbage in triton 3.8 (fp16 and fp32 are right); the upcast is exact.
    """
    return dtype == torch.float32 or (INTERPRET and dtype == torch.bfloat16)


def _interpret_tile_meta(kernel_size: int) -> dict:
    """The fixed interpreter configuration: small tiles (several per image, several channel blocks)."""
    if not INTERPRET:
        return {}
    if INTERPRET_PATH == "dot":
        return {
            "BLOCK_C": 1,
            "BLOCK_H": 16,
            "BLOCK_W": 16,
            "USE_DOT": True,
            "WIN": triton.next_power_of_2(15 + kernel_size),
        }
    return {"BLOCK_C": 2, "BLOCK_H": 8, "BLOCK_W": 8, "USE_DOT": False, "WIN": 16}


def _interpret_wgrad_meta(kernel_size: int) -> dict:
    if not INTERPRET:
        return {}
    if INTERPRET_PATH == "dot":
        kpad = max(16, triton.next_power_of_2(kernel_size))
        return {"BLOCK_C": 1, "BLOCK_T": 16, "BLOCK_P": 16, "USE_DOT": True, "KPAD": kpad, "DOT_W": 16}
    return {"BLOCK_C": 2, "BLOCK_T": 16, "BLOCK_P": 32, "USE_DOT": False, "KPAD": 16, "DOT_W": 16}


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
        DOT_IEEE=_dot_ieee(x.dtype),
        **_interpret_tile_meta(kernel_size),
    )
    return y


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1


def _split_count(x: torch.Tensor) -> int:
    """How many partial sums the weight-gradient reduction is split into (enough programs to fill the GPU).

    Sized for the dot configs (one program per channel and split); the direct configs have more programs anyway.
    Splits beyond the work available just store zeros.
    """
    batch, channels, height, _ = x.shape
    if INTERPRET:
        return 2
    target = 4 * _num_sms(x.device)
    return max(1, min(triton.cdiv(target, channels), batch * height, 64))


def _weight_grad_launch(x: torch.Tensor, grad_out: torch.Tensor, kernel_size: int, channels_last: bool) -> torch.Tensor:
    """fp32 weight gradient ``(C, 1, K, K)`` of the convolution, from ``x`` and the output gradient."""
    batch, channels, height, width = x.shape
    split = _split_count(x)
    taps = kernel_size * kernel_size
    partial = torch.empty((split, channels, taps), device=x.device, dtype=torch.float32)
    kernel = _wgrad_channels_last if channels_last else _wgrad_nchw

    def grid(meta: dict) -> tuple[int, int, int]:
        tap_blocks = 1 if meta["USE_DOT"] else triton.cdiv(taps, meta["BLOCK_T"])
        return (triton.cdiv(channels, meta["BLOCK_C"]), tap_blocks, split)

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
        DOT_IEEE=_dot_ieee(x.dtype),
        **_interpret_wgrad_meta(kernel_size),
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
