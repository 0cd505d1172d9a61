"""grad_weight of the depthwise convolution on tiny planes as one batched GEMM (the "Toeplitz" method).

On an ``H x W`` plane a same-padded depthwise convolution is, per channel, the linear map ``y[c] = T[c] x[c]``
with ``T[c][o, i] = w[c, h_i - h_o + p, w_i - w_o + p]`` (zero where the offset is off the kernel). Its weight
gradient is therefore ``GT[c] = GY[c]^T @ X[c]`` (``(H W, B) @ (B, H W)``, all channels in one ``bmm``) followed
by a scatter-add of each entry of ``GT[c]`` onto the kernel tap it came from. On RepLKNet's last stage (7x7
planes, 13x13 kernels) this is several times faster than FFTs of 15x16 grids, which are dominated by per-plane
overhead; the ``(H W)^2`` table limits it to tiny planes (``cpu.py`` uses it up to 64 pixels).
"""

from __future__ import annotations

import functools

import torch

from replknet.ops.precision import compute_dtype, matrix_dtype


@functools.lru_cache(maxsize=64)
def _tap_index(height: int, width: int, kernel_size: int, device: torch.device) -> torch.Tensor:
    """``(H W * H W,)`` index of each ``T[o, i]`` into the flattened kernel; ``K * K`` marks an off-kernel entry."""
    pad = kernel_size // 2
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    dh = (rows.view(1, -1) - rows.view(-1, 1) + pad).view(height, 1, height, 1)  # (H_o, 1, H_i, 1)
    dw = (cols.view(1, -1) - cols.view(-1, 1) + pad).view(1, width, 1, width)  # (1, W_o, 1, W_i)
    valid = (dh >= 0) & (dh < kernel_size) & (dw >= 0) & (dw < kernel_size)
    index = torch.where(valid, dh * kernel_size + dw, kernel_size * kernel_size)  # (H_o, W_o, H_i, W_i)
    return index.reshape(-1)


def toeplitz_grad_weight(x: torch.Tensor, grad_output: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Gradient of the same-padded depthwise convolution with respect to its ``(C, 1, K, K)`` weight.

    The tables are built in ``matrix_dtype`` (bf16 GEMMs on bf16 hardware) and summed onto the taps in float32
    (float64 kept), channels in cache-sized chunks so each table is summed while still in cache.
    """
    batch, channels, height, width = x.shape
    pixels = height * width
    dtype, accumulate = matrix_dtype(x.dtype), compute_dtype(x.dtype)
    rows_x = x.to(dtype).reshape(batch, channels, pixels).transpose(0, 1)  # (C, B, H W)
    rows_g = grad_output.to(dtype).reshape(batch, channels, pixels).transpose(0, 1)  # (C, B, H W)
    index = _tap_index(height, width, kernel_size, x.device)
    flat = torch.zeros(channels, kernel_size * kernel_size + 1, dtype=accumulate, device=x.device)
    step = max(1, _CHUNK_BYTES // (pixels * pixels * torch.finfo(accumulate).bits // 8))
    for start in range(0, channels, step):
        stop = min(channels, start + step)
        grad_table = torch.bmm(rows_g[start:stop].transpose(1, 2), rows_x[start:stop])  # (c, H W_o, H W_i)
        grad_table = grad_table.to(accumulate).reshape(stop - start, -1)
        flat[start:stop].scatter_add_(1, index.expand(stop - start, -1), grad_table)
    return flat[:, :-1].reshape(channels, 1, kernel_size, kernel_size)


# NOTE: channels per chunk are chosen so a chunk's matrices stay near this size (bytes): built and used
# while in cache instead of written to memory and read back (stage 3 of RepLKNet-31B, B = 16: about 1.3x faster
# than building all 512 channels' matrices at once).
_CHUNK_BYTES = 2 << 20


def _hankel_matrices(kernel: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(C, H W, H W)`` symmetric matrices ``M[c][a, b] = k[c, h_a + h_b + s, w_a + w_b + s']`` (zero off-kernel).

    With ``s = p - H + 1`` (``p = K // 2``), the correlation with ``rotate(k)`` taken on a rotated plane is a product
    with ``M``. Every index grows with every coordinate, so the matrices are one strided view of the zero-padded
    kernel, materialised by a plain copy instead of a gather.
    """
    channels, kernel_size = kernel.shape[0], kernel.shape[-1]
    pad = kernel_size // 2
    # index into the kernel along a dimension of size n: h_a + h_b + (p - n + 1), over [p - n + 1, p + n - 1]
    start_h, start_w = pad - height + 1, pad - width + 1
    before_h, before_w = max(0, -start_h), max(0, -start_w)
    after_h = max(0, pad + height - kernel_size)
    after_w = max(0, pad + width - kernel_size)
    padded = torch.nn.functional.pad(kernel[:, 0], (before_w, after_w, before_h, after_h)).contiguous()
    rows, cols = padded.shape[-2:]
    offset = padded.storage_offset() + (start_h + before_h) * cols + (start_w + before_w)
    view = padded.as_strided((channels, height, width, height, width), (rows * cols, cols, 1, cols, 1), offset)
    return view.reshape(channels, height * width, height * width)


# The (H W) x (H W) matrix of one channel grows with the fourth power of the plane side: 64 MiB in float32 at
# 64x64, 10 GiB at 224x224. Larger planes are refused (the auto rule only uses this path up to 14x14).
MAX_PIXELS = 64 * 64


def _correlate(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Same-padded depthwise correlation ``F.conv2d(x, kernel, padding=K // 2, groups=C)`` as per-channel GEMMs.

    ``x``: ``(B, C, H, W)``; ``kernel``: ``(C, 1, K, K)``, both in the compute dtype; returns NCHW-contiguous.
    With the input rotated, ``correlate(x, k)[:, c] = rotate(x)[:, c] @ M(rotate(k))[c]`` (``M`` symmetric). The
    rotation is the only copy of the input; channels go in cache-sized chunks and each ``bmm`` writes straight
    into its channels of the NCHW result.
    """
    batch, channels, height, width = x.shape
    pixels = height * width
    if pixels > MAX_PIXELS:
        mib = pixels * pixels * x.element_size() / 2**20
        raise ValueError(
            f"the toeplitz depthwise conv builds an (H*W)^2 matrix per channel: a {height}x{width} plane needs "
            f"{mib:,.0f} MiB per channel (limit: planes of {MAX_PIXELS} pixels); use impl='auto' or 'fft'"
        )
    rotated = x.contiguous().flip(-2, -1).reshape(batch, channels, pixels)
    rotated_kernel = kernel.flip(-2, -1)
    y = torch.empty(batch, channels, pixels, dtype=x.dtype, device=x.device)
    step = max(1, _CHUNK_BYTES // (pixels * pixels * y.element_size()))
    for start in range(0, channels, step):
        stop = min(channels, start + step)
        matrices = _hankel_matrices(rotated_kernel[start:stop], height, width)  # (c, H W, H W)
        torch.bmm(rotated[:, start:stop].transpose(0, 1), matrices, out=y[:, start:stop].transpose(0, 1))
    return y.view(batch, channels, height, width)


def toeplitz_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Same-padded depthwise convolution as one ``(B, H W) @ (H W, H W)`` GEMM per channel, for small planes.

    ``2 C (H W)^2`` multiply-adds per sample instead of the direct method's ``2 C H W K^2``, a saving whenever
    the kernel is larger than the plane (RepLKNet-31B stages 3-4: 3.4x); the matrices cost one pass over
    ``C (H W)^2`` floats per call, which the batch has to amortise. NCHW out, in ``x.dtype`` (computed in
    ``matrix_dtype``: bf16 GEMMs with float32 accumulation on bf16 hardware, else float32; float64 kept).
    """
    dtype = matrix_dtype(x.dtype)
    y = _correlate(x.to(dtype), weight.to(dtype))
    if bias is not None:
        y = y.add_(bias.to(dtype).view(1, -1, 1, 1))
    return y.to(dtype=x.dtype, memory_format=torch.contiguous_format)


def toeplitz_grad_input(grad_output: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Input gradient of the same-padded depthwise convolution: the correlation with the rotated kernel."""
    dtype = matrix_dtype(grad_output.dtype)
    grad = _correlate(grad_output.to(dtype), weight.to(dtype).flip(-2, -1))
    return grad.to(dtype=grad_output.dtype, memory_format=torch.contiguous_format)
