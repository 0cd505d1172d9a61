"""The Triton depthwise convolution as a ``dwconv2d`` implementation, and the CUDA ``impl="auto"`` rule.

Importing this module is cheap: it registers ``"triton"`` with ``replknet.ops.dispatch`` and a rule for CUDA
tensors, and imports triton (through ``replknet.ops.triton_kernels``) only when a kernel is first needed. When
triton is missing, the tensor is on the CPU without ``TRITON_INTERPRET=1``, or the shape/dtype is outside what the
kernels cover, ``impl="triton"`` logs once and computes the reference convolution instead.

The auto rule picks Triton only where it computed the right result and was measured faster than PyTorch's own path
(cuDNN or PyTorch's native depthwise kernel, via ``F.conv2d``) on this GPU: the first time a shape is seen, the
Triton result on that input (forward; with gradients needed, the input and weight gradients too) is compared with
the float64 reference within the dtype's tolerance (a mismatch logs one warning and keeps cuDNN for that shape),
then both are timed (forward, or forward+backward) with CUDA events, and the verdict is cached for the process.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from replknet.ops.dispatch import get_impl, reference_dwconv2d, register_auto_rule, register_impl
from replknet.ops.triton_check import TOLERANCES
from replknet.testing import relative_error

__all__ = [
    "AutoDecision",
    "auto_decisions",
    "check_against_reference",
    "clear_auto_decisions",
    "cuda_auto_rule",
    "decide",
    "measure",
    "triton_available",
    "triton_dwconv2d",
    "unsupported_reason",
]

_logger = logging.getLogger(__name__)

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_KERNEL_SIZE = 63
# Triton must beat the reference by this factor to be picked (timing noise must not make "auto" slower).
AUTO_MARGIN = 0.95

_kernels: Any = None  # replknet.ops.triton_kernels once imported, False when it cannot be
_logged: set[str] = set()


@dataclass(frozen=True)
class AutoDecision:
    """One verdict of the CUDA auto rule: the correctness check, median milliseconds of each path, the choice.

    ``errors`` are the relative errors of each checked output against float64 (``out``, ``out_bias``, and
    ``grad_input``, ``grad_weight`` when gradients are needed); ``correct`` is None when the check did not run
    (the kernel raised); the timings are NaN when nothing was timed (a wrong or failing kernel).
    """

    key: tuple
    triton_ms: float
    reference_ms: float
    use_triton: bool
    errors: dict[str, float] = field(default_factory=dict)
    tolerance: float = float("nan")
    correct: bool | None = None


_DECISIONS: dict[tuple, AutoDecision] = {}


def _log_once(key: str, level: int, message: str, *args: object) -> None:
    if key not in _logged:
        _logged.add(key)
        _logger.log(level, message, *args)


def interpreter_enabled() -> bool:
    """True when ``TRITON_INTERPRET`` asks triton to run kernels on the CPU (tests only: about 1e4x slower)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")


def _load_kernels() -> Any:
    """Import the kernel module on first use; None (logged once) when triton cannot be imported."""
    global _kernels
    if _kernels is None:
        if importlib.util.find_spec("triton") is None:
            _log_once("no-triton", logging.WARNING, "triton is not installed; the 'triton' dwconv2d falls back")
            _kernels = False
        else:
            try:
                from replknet.ops import triton_kernels
            except Exception as error:  # a broken triton install must not break the model
                _log_once("bad-triton", logging.WARNING, "cannot import the Triton kernels (%s); falling back", error)
                _kernels = False
            else:
                _kernels = triton_kernels
    return _kernels or None


def triton_available() -> bool:
    """Whether the Triton kernels can run here (triton imports; a CUDA device, or the interpreter, is present)."""
    if not (torch.cuda.is_available() or interpreter_enabled()):
        return False
    return _load_kernels() is not None


def unsupported_reason(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> str | None:
    """Why the Triton kernels cannot take these (already shape-checked) arguments, or None if they can."""
    if not (x.device.type == "cuda" or (x.device.type == "cpu" and interpreter_enabled())):
        return f"device {x.device.type!r} (CUDA, or the CPU with TRITON_INTERPRET=1)"
    if x.dtype not in SUPPORTED_DTYPES:
        return f"dtype {x.dtype} (supported: float32, float16, bfloat16)"
    if weight.shape[-1] > MAX_KERNEL_SIZE:
        return f"kernel size {weight.shape[-1]} > {MAX_KERNEL_SIZE}"
    if x.numel() == 0:
        return "an empty input"
    if x.shape[0] > 65535:
        return f"batch {x.shape[0]} > 65535 (grid limit)"
    return None


def _matching_dtypes(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Apply autocast like ``F.conv2d`` would, and reject mixed dtypes outside autocast."""
    device_type = x.device.type
    if device_type == "cuda" and torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        x, weight = x.to(dtype), weight.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
    if weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
        bias_dtype = None if bias is None else bias.dtype
        raise ValueError(
            f"triton dwconv2d needs input, weight and bias of one dtype, got {x.dtype}, {weight.dtype}, {bias_dtype}"
        )
    if weight.device != x.device or (bias is not None and bias.device != x.device):
        raise ValueError(f"triton dwconv2d needs all tensors on one device, got input on {x.device}")
    return x, weight, bias


def triton_dwconv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Depthwise convolution (stride 1, same padding) by the Triton kernels, differentiable in all inputs.

    Args:
        x: ``(N, C, H, W)`` float32/float16/bfloat16 on CUDA, NCHW or channels_last; the output keeps the layout.
        weight: ``(C, 1, K, K)``, odd ``K`` up to 63, same dtype as ``x`` (autocast casts like ``F.conv2d``).
        bias: optional ``(C,)``.

    Falls back to the reference convolution (logged once) when the kernels cannot run these arguments.
    """
    reason = unsupported_reason(x, weight, bias)
    kernels = _load_kernels() if reason is None else None
    if reason is None and kernels is None:
        reason = "triton is unavailable"
    if reason is not None:
        _log_once(f"fallback:{reason}", logging.WARNING, "triton dwconv2d cannot run %s; using the reference", reason)
        return reference_dwconv2d(x, weight, bias)
    x, weight, bias = _matching_dtypes(x, weight, bias)
    with torch.autocast(x.device.type, enabled=False):
        return kernels.dwconv2d_triton_kernels(x, weight, bias)


def _median_ms(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median time of ``fn`` after two warm-up calls (the first one autotunes the kernels): CUDA events on a GPU,
    the wall clock elsewhere (the rule's logic is tested on the CPU)."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        if device.type != "cuda":
            start_s = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start_s) * 1e3)
            continue
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def measure(x: torch.Tensor, weight: torch.Tensor, impl: Callable, backward: bool, repeats: int = 5) -> float:
    """Median milliseconds of one call of ``impl(x, weight, bias)`` (with its backward if ``backward``)."""
    x = x.detach()
    weight = weight.detach()
    # NOTE: timed with a (zero) bias, as in the fused deploy form; a bias costs next to nothing either way.
    bias = torch.zeros(weight.shape[0], device=weight.device, dtype=weight.dtype)
    if not backward:

        def run() -> object:
            with torch.no_grad():
                return impl(x, weight, bias)

        return _median_ms(run, repeats, x.device)
    x_grad = x.detach().requires_grad_(True)
    w_grad = weight.detach().requires_grad_(True)
    grad_out = torch.randn_like(x)

    def run_backward() -> object:
        with torch.enable_grad():
            out = impl(x_grad, w_grad, bias)
            return torch.autograd.grad(out, (x_grad, w_grad), grad_out)

    return _median_ms(run_backward, repeats, x.device)


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """``channels_last`` when ``x`` is laid out that way (and not also NCHW-contiguous), else ``contiguous_format``."""
    if x.is_contiguous():
        return torch.contiguous_format
    if x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _decision_key(x: torch.Tensor, weight: torch.Tensor, backward: bool) -> tuple:
    device_type = x.device.type
    autocast = str(torch.get_autocast_dtype(device_type)) if torch.is_autocast_enabled(device_type) else None
    layout = "channels_last" if memory_format_of(x) == torch.channels_last else "nchw"
    return (x.device.index, str(x.dtype), tuple(x.shape), weight.shape[-1], layout, backward, autocast)


def check_against_reference(
    x: torch.Tensor, weight: torch.Tensor, backward: bool, candidate: str = "triton", seed: int = 0
) -> tuple[dict[str, float], float]:
    """Relative errors of the registered impl ``candidate`` on this input against float64 ``reference``.

    Runs ``candidate`` as the model would (same tensors, layout and autocast state): the forward without and with a
    (random) bias, and with ``backward`` the input and weight gradients for a random output gradient. The reference
    is the ``"reference"`` impl in float64 on the same device, fed the inputs rounded to the dtype the candidate
    computed in (its output dtype, which autocast may have changed).

    Returns:
        The relative errors (``out``, ``out_bias``, ``grad_input``, ``grad_weight``) and the tolerance of the
        compute dtype (``triton_check.TOLERANCES``).
    """
    fn, reference = get_impl(candidate), get_impl("reference")
    x, weight = x.detach(), weight.detach()
    generator = torch.Generator(device=x.device).manual_seed(seed)
    bias = torch.randn(weight.shape[0], generator=generator, device=x.device).to(weight.dtype)
    with torch.no_grad():
        out = fn(x, weight, None)
        out_bias = fn(x, weight, bias)
    dtype = out.dtype
    x64, w64, b64 = (t.to(dtype).double() for t in (x, weight, bias))
    with torch.autocast(x.device.type, enabled=False):
        x64.requires_grad_(backward)
        w64.requires_grad_(backward)
        with torch.set_grad_enabled(backward):
            expected = reference(x64, w64, None)
        expected_bias = expected.detach() + b64.view(1, -1, 1, 1)
    errors = {"out": relative_error(out, expected.detach()), "out_bias": relative_error(out_bias, expected_bias)}
    if backward:
        grad_output = torch.randn(out.shape, generator=generator, device=x.device).to(dtype)
        x_leaf = x.clone().requires_grad_(True)  # clone keeps the memory format
        w_leaf = weight.clone().requires_grad_(True)
        with torch.enable_grad():
            grad_input, grad_weight = torch.autograd.grad(fn(x_leaf, w_leaf, None), (x_leaf, w_leaf), grad_output)
        expected_input, expected_weight = torch.autograd.grad(expected, (x64, w64), grad_output.double())
        errors["grad_input"] = relative_error(grad_input, expected_input)
        errors["grad_weight"] = relative_error(grad_weight, expected_weight)
    return errors, TOLERANCES.get(dtype, TOLERANCES[torch.float32])


def decide(x: torch.Tensor, weight: torch.Tensor, backward: bool, candidate: str = "triton") -> AutoDecision:
    """Check, then time, the registered impl ``candidate`` against the reference for this shape (once per process;
    cached) and return the verdict. Works on any device (the timings use CUDA events on a GPU)."""
    key = _decision_key(x, weight, backward)
    decision = _DECISIONS.get(key)
    if decision is not None:
        return decision
    errors, tolerance = check_against_reference(x, weight, backward, candidate)
    if not all(error <= tolerance for error in errors.values()):  # NaN fails too
        decision = AutoDecision(key, float("nan"), float("nan"), False, errors, tolerance, correct=False)
        _DECISIONS[key] = decision
        _logger.warning(
            "dwconv2d auto %s: %s differs from the reference (relative errors %s; tolerance %.1e); using the "
            "reference (cuDNN) for this shape",
            key,
            candidate,
            ", ".join(f"{name} {error:.2e}" for name, error in errors.items()),
            tolerance,
        )
        return decision
    triton_ms = measure(x, weight, get_impl(candidate), backward)
    reference_ms = measure(x, weight, reference_dwconv2d, backward)
    use_triton = triton_ms < AUTO_MARGIN * reference_ms
    decision = AutoDecision(key, triton_ms, reference_ms, use_triton, errors, tolerance, correct=True)
    _DECISIONS[key] = decision
    _logger.info(
        "dwconv2d auto %s: %s correct (max relative error %.1e), %.3f ms vs reference %.3f ms -> %s",
        key,
        candidate,
        max(errors.values()),
        triton_ms,
        reference_ms,
        candidate if use_triton else "reference",
    )
    return decision


def auto_decisions() -> list[AutoDecision]:
    """The verdicts the CUDA auto rule has measured so far in this process."""
    return list(_DECISIONS.values())


def clear_auto_decisions() -> None:
    """Forget the measured verdicts (the next call of each shape measures again)."""
    _DECISIONS.clear()


def cuda_auto_rule(x: torch.Tensor, weight: torch.Tensor) -> str | None:
    """``"triton"`` where it matched the float64 reference on this shape's first input and was measured faster
    than the reference on this GPU, else None."""
    if os.environ.get("REPLKNET_TRITON_AUTO", "1") == "0":
        return None
    if x.device.type != "cuda" or unsupported_reason(x, weight) is not None or _load_kernels() is None:
        return None
    backward = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    key = _decision_key(x, weight, backward)
    if key not in _DECISIONS and torch.cuda.is_current_stream_capturing():
        return None  # cannot time inside CUDA-graph capture; an unmeasured shape keeps the reference
    try:
        return "triton" if decide(x, weight, backward).use_triton else None
    except Exception as error:  # a kernel that fails to compile must not break the model
        _log_once(f"auto-fail:{key}", logging.WARNING, "triton dwconv2d failed on %s (%s); using reference", key, error)
        _DECISIONS[key] = AutoDecision(key, float("nan"), float("nan"), False)
        return None


register_impl("triton", triton_dwconv2d)
register_auto_rule("cuda", cuda_auto_rule)
