"""Check a depthwise convolution implementation against float64 ``F.conv2d``: output and all three gradients.

Used by the tests (on the CPU under ``TRITON_INTERPRET=1``) and by ``benchmarks/gpu_check.py`` (on a GPU).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from replknet.testing import relative_error

# Largest accepted relative error (max |diff| / max |ref|) per storage dtype: products are accumulated in fp32,
# so the error is the rounding of the stored result (fp16: 2^-11, bf16: 2^-8) plus fp32 summation noise.
TOLERANCES = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def compare_with_float64(
    fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor],
    shape: tuple[int, int, int, int],
    kernel_size: int,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
    bias: bool = True,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> dict[str, float | bool]:
    """Run ``fn(x, weight, bias)`` forward and backward and compare with float64 ``F.conv2d`` on the same inputs.

    Returns:
        Relative errors ``out``, ``grad_input``, ``grad_weight`` (and ``grad_bias``), whether the output and the
        input gradient kept the input's memory format (``layout_kept``), and the ``tolerance`` for ``dtype``.
    """
    generator = torch.Generator().manual_seed(seed)
    batch, channels, height, width = shape
    x = torch.randn(shape, generator=generator).to(dtype)
    weight = (torch.randn(channels, 1, kernel_size, kernel_size, generator=generator) / kernel_size).to(dtype)
    bias_t = torch.randn(channels, generator=generator).to(dtype) if bias else None
    grad_out = torch.randn(shape, generator=generator).to(dtype)
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    x_dev = x.to(device).contiguous(memory_format=fmt).detach().clone(memory_format=fmt).requires_grad_(True)
    w_dev = weight.to(device).detach().clone().requires_grad_(True)
    b_dev = bias_t.to(device).detach().clone().requires_grad_(True) if bias_t is not None else None
    out = fn(x_dev, w_dev, b_dev)
    out.backward(grad_out.to(device).contiguous(memory_format=fmt))

    # float64 on the same device (PyTorch's depthwise kernels run float64 on CUDA too)
    x64 = x.to(device, torch.float64).requires_grad_(True)
    w64 = weight.to(device, torch.float64).requires_grad_(True)
    b64 = bias_t.to(device, torch.float64).requires_grad_(True) if bias_t is not None else None
    ref = F.conv2d(x64, w64, b64, padding=kernel_size // 2, groups=channels)
    ref.backward(grad_out.to(device, torch.float64))

    result: dict[str, float | bool] = {
        "out": relative_error(out.detach(), ref.detach()),
        "grad_input": relative_error(x_dev.grad, x64.grad),
        "grad_weight": relative_error(w_dev.grad, w64.grad),
        "layout_kept": bool(out.is_contiguous(memory_format=fmt) and x_dev.grad.is_contiguous(memory_format=fmt)),
        "dtypes_kept": bool(out.dtype == dtype and x_dev.grad.dtype == dtype and w_dev.grad.dtype == dtype),
        "tolerance": TOLERANCES.get(dtype, 1e-5),
    }
    if b_dev is not None:
        result["grad_bias"] = relative_error(b_dev.grad, b64.grad)
    return result
