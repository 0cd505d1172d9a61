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

from replknet.ops.fft import compute_dtype


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
    """Gradient of the same-padded depthwise convolution with respect to its ``(C, 1, K, K)`` weight."""
    batch, channels, height, width = x.shape
    dtype = compute_dtype(x.dtype)
    rows_x = x.to(dtype).reshape(batch, channels, -1).transpose(0, 1)  # (C, B, H W)
    rows_g = grad_output.to(dtype).reshape(batch, channels, -1).transpose(0, 1)  # (C, B, H W)
    grad_table = torch.bmm(rows_g.transpose(1, 2), rows_x)  # (C, H W_o, H W_i)
    index = _tap_index(height, width, kernel_size, x.device).expand(channels, -1)
    flat = torch.zeros(channels, kernel_size * kernel_size + 1, dtype=dtype, device=x.device)
    flat.scatter_add_(1, index, grad_table.reshape(channels, -1))
    return flat[:, :-1].reshape(channels, 1, kernel_size, kernel_size)
