"""Registry of depthwise convolution implementations and the dispatcher behind `dwconv2d`.

An implementation is a function ``fn(x, weight, bias) -> y`` computing a stride-1, same-padded depthwise
convolution (``weight`` of shape ``(C, 1, K, K)``, odd ``K``), differentiable with respect to all inputs.
``reference`` (plain ``F.conv2d``) is always registered and is what tracing, scripting and export use.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

_logger = logging.getLogger(__name__)

DwConvFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]

_IMPLS: dict[str, DwConvFn] = {}
# device type ("cpu", "cuda") -> rule(x, weight) returning an impl name, or None to use "reference"
_AUTO_RULES: dict[str, Callable[[torch.Tensor, torch.Tensor], str | None]] = {}
_override = threading.local()


def register_impl(name: str, fn: DwConvFn) -> None:
    """Register a depthwise convolution implementation under ``name`` (replacing any previous one)."""
    _IMPLS[name] = fn


def register_auto_rule(device_type: str, rule: Callable[[torch.Tensor, torch.Tensor], str | None]) -> None:
    """Set the rule ``impl="auto"`` follows on ``device_type``: ``rule(x, weight)`` returns an impl name or None."""
    _AUTO_RULES[device_type] = rule


def available_impls() -> list[str]:
    """Names accepted by ``dwconv2d(..., impl=...)``; ``"auto"`` is always accepted too."""
    return sorted(_IMPLS)


@contextlib.contextmanager
def impl_override(name: str | None) -> Iterator[None]:
    """Force every ``dwconv2d`` call in this thread (including the models' layers) to use ``name``.

    Used to count FLOPs with the reference convolution, or to compare implementations on the same model.
    """
    if name is not None and name != "auto" and name not in _IMPLS:
        raise ValueError(f"unknown depthwise conv impl {name!r}; available: {available_impls()}")
    previous = getattr(_override, "name", None)
    _override.name = name
    try:
        yield
    finally:
        _override.name = previous


def reference_dwconv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Plain PyTorch: ``F.conv2d(x, weight, bias, padding=K // 2, groups=C)``."""
    kernel_size = weight.shape[-1]
    return F.conv2d(x, weight, bias, stride=1, padding=kernel_size // 2, groups=x.shape[1])


register_impl("reference", reference_dwconv2d)


def _check_args(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    if x.dim() != 4:
        raise ValueError(f"dwconv2d expects a 4-D input (N, C, H, W), got shape {tuple(x.shape)}")
    channels = x.shape[1]
    if weight.dim() != 4 or weight.shape[0] != channels or weight.shape[1] != 1 or weight.shape[2] != weight.shape[3]:
        raise ValueError(
            f"dwconv2d expects a weight of shape ({channels}, 1, K, K) for an input with {channels} channels, "
            f"got {tuple(weight.shape)}"
        )
    if weight.shape[-1] % 2 != 1:
        raise ValueError(f"dwconv2d needs an odd kernel size for same padding, got {weight.shape[-1]}")
    if bias is not None and bias.shape != (channels,):
        raise ValueError(f"dwconv2d expects a bias of shape ({channels},), got {tuple(bias.shape)}")


def _choose_auto(x: torch.Tensor, weight: torch.Tensor) -> str:
    """The implementation ``impl="auto"`` uses for this input (the device's rule, else ``reference``)."""
    rule = _AUTO_RULES.get(x.device.type)
    choice = rule(x, weight) if rule is not None else None
    return choice if choice is not None else "reference"


def dwconv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, impl: str = "auto"
) -> torch.Tensor:
    """Depthwise 2-D convolution, stride 1, same padding (``padding = K // 2``).

    Args:
        x: input ``(N, C, H, W)``, NCHW or channels_last; the output keeps its memory format.
        weight: ``(C, 1, K, K)`` with odd ``K``.
        bias: optional ``(C,)``.
        impl: ``"auto"`` (fastest correct path for the shape) or a name from ``available_impls()``.
    """
    _check_args(x, weight, bias)
    forced = getattr(_override, "name", None)
    if forced is not None and forced != "auto":
        impl = forced
    if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling():
        impl = "reference"
    if impl == "auto":
        impl = _choose_auto(x, weight)
    fn = _IMPLS.get(impl)
    if fn is None:
        raise ValueError(f"unknown depthwise conv impl {impl!r}; available: {available_impls()}")
    return fn(x, weight, bias)
