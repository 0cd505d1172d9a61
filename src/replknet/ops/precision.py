"""The dtype each CPU pass of the depthwise convolution computes in.

Two kinds of pass: FFTs, which exist in float32 and float64 only (``torch.fft`` has no bf16 on the CPU), and
matrix-shaped work (oneDNN convolutions, batched GEMMs), which runs bf16 natively on CPUs with bf16 dot-product
instructions (AVX512-BF16, AMX): bf16 operands, float32 accumulation, one rounding of the result. Without them
oneDNN and MKL emulate bf16 much more slowly than they compute float32, so bf16 work is done in float32 there.
"""

from __future__ import annotations

import functools

import torch


@functools.cache
def bf16_hardware() -> bool:
    """The CPU has bf16 dot-product instructions (``avx512_bf16`` or AMX tiles)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The FFT passes: float64 stays float64 (for gradcheck); everything else is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def matrix_dtype(dtype: torch.dtype) -> torch.dtype:
    """The oneDNN and GEMM passes: bf16 stays bf16 on bf16 hardware; otherwise as ``compute_dtype``."""
    if dtype == torch.bfloat16 and bf16_hardware():
        return torch.bfloat16
    return compute_dtype(dtype)
