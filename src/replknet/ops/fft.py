"""Depthwise convolution through chunked real FFTs: forward, grad_input and grad_weight.

All three products are computed on a periodic grid of size ``N >= H + K // 2`` per spatial dimension, the
smallest size at which the wanted outputs of a circular product equal those of the linear one (the full
``H + K - 1`` is not needed, because only ``H`` outputs, or ``K`` weight taps, are read back):

- forward:      ``y  = irfft2(rfft2(x)  * rfft2(flip(w)))[p : p + H]``
- grad_input:   ``gx = irfft2(rfft2(gy) * rfft2(w))[p : p + H]``
- grad_weight:  ``gw = irfft2(sum_b rfft2(x) * conj(rfft2(gy)))[-p : p + 1]`` (indices modulo ``N``)

with ``p = K // 2``. The batch is processed in chunks so the spectra of one chunk stay in cache and no
buffer is ever allocated for the whole batch; the kernel spectrum is computed once per call and reused for
every chunk. Low-precision inputs are computed in float32 (``torch.fft`` has no bf16 on the CPU) and cast back.
"""

from __future__ import annotations

import functools

import torch

from replknet.ops.precision import compute_dtype

# NOTE: a chunk's complex spectrum is kept near this size (bytes): large enough for the FFT library to
# amortise its per-call cost, small enough to stay in this machine's cache (measured, docs/ops.md).
_CHUNK_BYTES = 4 << 20


@functools.lru_cache(maxsize=256)
def fft_size(minimum: int, even: bool = False) -> int:
    """Smallest integer ``>= minimum`` whose prime factors are 2, 3 and 5 (and even, if asked)."""
    n = max(minimum, 1)
    while True:
        if not (even and n % 2):
            m = n
            for prime in (2, 3, 5):
                while m % prime == 0:
                    m //= prime
            if m == 1:
                return n
        n += 1


def _grid(height: int, width: int, kernel_size: int) -> tuple[int, int]:
    pad = kernel_size // 2
    return fft_size(height + pad), fft_size(width + pad, even=True)


def _chunk_size(batch: int, channels: int, grid: tuple[int, int]) -> int:
    spectrum_bytes = channels * grid[0] * (grid[1] // 2 + 1) * 8  # complex64
    return max(1, min(batch, _CHUNK_BYTES // max(spectrum_bytes, 1)))


def _as_real_nchw(t: torch.Tensor) -> torch.Tensor:
    # NOTE: FFTs on a channels_last tensor run about 2x slower (strided planes), so convert once up front.
    return t.to(dtype=compute_dtype(t.dtype), memory_format=torch.contiguous_format)


def _kernel_spectrum(weight: torch.Tensor, grid: tuple[int, int], flip: bool) -> torch.Tensor:
    kernel = weight[:, 0].to(compute_dtype(weight.dtype))  # (C, K, K)
    if flip:
        kernel = kernel.flip(-2, -1)
    return torch.fft.rfft2(kernel, s=grid)  # (C, Nh, Nw // 2 + 1)


def _apply_kernel(
    x: torch.Tensor, spectrum: torch.Tensor, kernel_size: int, grid: tuple[int, int], out: torch.Tensor
) -> None:
    """``out = correlate(x, kernel)`` chunk by chunk, where ``spectrum`` is the kernel's (flipped) spectrum."""
    batch, channels, height, width = x.shape
    pad = kernel_size // 2
    step = _chunk_size(batch, channels, grid)
    for start in range(0, batch, step):
        chunk = _as_real_nchw(x[start : start + step])
        product = torch.fft.rfft2(chunk, s=grid)
        product.mul_(spectrum)
        full = torch.fft.irfft2(product, s=grid)  # (n, C, Nh, Nw)
        out[start : start + step].copy_(full[:, :, pad : pad + height, pad : pad + width])


def fft_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Forward pass only (no autograd): ``F.conv2d(x, weight, bias, padding=K // 2, groups=C)`` via FFT."""
    kernel_size = weight.shape[-1]
    grid = _grid(x.shape[2], x.shape[3], kernel_size)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # (N, C, H, W), contiguous
    _apply_kernel(x, _kernel_spectrum(weight, grid, flip=True), kernel_size, grid, out)
    if bias is not None:
        out.add_(bias.to(out.dtype).view(1, -1, 1, 1))
    return out


def fft_backward(
    x: torch.Tensor, weight: torch.Tensor, grad_output: torch.Tensor, need_input: bool, need_weight: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """grad_input and grad_weight in one pass over the batch (each output-gradient chunk is transformed once)."""
    batch, channels, height, width = x.shape
    kernel_size = weight.shape[-1]
    grid = _grid(height, width, kernel_size)
    pad = kernel_size // 2
    grad_input = torch.empty(x.shape, dtype=x.dtype, device=x.device) if need_input else None
    spectrum_w = _kernel_spectrum(weight, grid, flip=False) if need_input else None
    accumulated = None
    step = max(1, _chunk_size(batch, channels, grid) // 2)
    for start in range(0, batch, step):
        spectrum_g = torch.fft.rfft2(_as_real_nchw(grad_output[start : start + step]), s=grid)
        if need_weight:
            spectrum_x = torch.fft.rfft2(_as_real_nchw(x[start : start + step]), s=grid)
            spectrum_x.mul_(spectrum_g.conj())
            partial = spectrum_x.sum(0)
            accumulated = partial if accumulated is None else accumulated.add_(partial)
        if need_input:
            spectrum_g.mul_(spectrum_w)
            full = torch.fft.irfft2(spectrum_g, s=grid)
            grad_input[start : start + step].copy_(full[:, :, pad : pad + height, pad : pad + width])
    grad_weight = None
    if need_weight:
        full = torch.fft.irfft2(accumulated, s=grid)
        rows = torch.arange(-pad, pad + 1, device=x.device) % grid[0]
        cols = torch.arange(-pad, pad + 1, device=x.device) % grid[1]
        grad_weight = full[:, rows][:, :, cols].unsqueeze(1)
    return grad_input, grad_weight
