"""Registry of depthwise convolution implementations and the dispatcher behind `dwconv2d`.

An implementation is a function ``fn(x, weight, bias) -> y`` computing a stride-1, same-padded depthwise
convolution (``weight`` of shape ``(C, 1, K, K)``, odd ``K``), differentiable with respect to all inputs.
``reference`` (plain ``F.conv2d``) is always registered and is what tracing, scripting and export use.

Dilated convolutions (dilation ``r > 1``, padding ``r (K - 1) / 2``) have their own registry of implementations
``fn(x, weight, bias, dilation) -> y`` and their own auto rules; an implementation registered only for
dilation 1 still accepts a dilated call, computed on the equivalent dense kernel of size ``r (K - 1) + 1``
(``dilate_kernel``).
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
DilatedDwConvFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", int], torch.Tensor]

_IMPLS: dict[str, DwConvFn] = {}
_DILATED_IMPLS: dict[str, DilatedDwConvFn] = {}
# device type ("cpu", "cuda") -> rule(x, weight) returning an impl name, or None to use "reference"
_AUTO_RULES: dict[str, Callable[[torch.Tensor, torch.Tensor], str | None]] = {}
# device type -> rule(x, weight, dilation) for dilation > 1, returning an impl name, or None for "reference"
_DILATED_AUTO_RULES: dict[str, Callable[[torch.Tensor, torch.Tensor, int], str | None]] = {}
_override = threading.local()


def register_impl(name: str, fn: DwConvFn) -> None:
    """Register a depthwise convolution implementation under ``name`` (replacing any previous one)."""
    _IMPLS[name] = fn


def register_auto_rule(device_type: str, rule: Callable[[torch.Tensor, torch.Tensor], str | None]) -> None:
    """Set the rule ``impl="auto"`` follows on ``device_type``: ``rule(x, weight)`` returns an impl name or None."""
    _AUTO_RULES[device_type] = rule


def register_dilated_impl(name: str, fn: DilatedDwConvFn) -> None:
    """Register ``fn(x, weight, bias, dilation)`` as what ``impl=name`` computes for any dilation (also 1 when
    ``name`` has no dilation-1 implementation)."""
    _DILATED_IMPLS[name] = fn


def register_dilated_auto_rule(device_type: str, rule: Callable[[torch.Tensor, torch.Tensor, int], str | None]) -> None:
    """Set the rule ``impl="auto"`` follows for dilation > 1 on ``device_type``: ``rule(x, weight, dilation)``."""
    _DILATED_AUTO_RULES[device_type] = rule


def get_impl(name: str) -> DwConvFn:
    """The registered (dilation-1) implementation ``name``."""
    fn = _IMPLS.get(name)
    if fn is None:
        raise ValueError(f"unknown depthwise conv impl {name!r}; available: {available_impls()}")
    return fn


def available_impls() -> list[str]:
    """Names accepted by ``dwconv2d(..., impl=...)``; ``"auto"`` is always accepted too."""
    return sorted(set(_IMPLS) | set(_DILATED_IMPLS))


@contextlib.contextmanager
def impl_override(name: str | None) -> Iterator[None]:
    """Force every ``dwconv2d`` call in this thread (including the models' layers) to use ``name``.

    Used to count FLOPs with the reference convolution, or to compare implementations on the same model.
    """
    if name is not None and name != "auto" and name not in available_impls():
        raise ValueError(f"unknown depthwise conv impl {name!r}; available: {available_impls()}")
    previous = getattr(_override, "name", None)
    _override.name = name
    try:
        yield
    finally:
        _override.name = previous


def reference_forced() -> bool:
    """``impl_override("reference")`` is in effect in this thread (the strided depthwise module follows it too)."""
    return getattr(_override, "name", None) == "reference"


def reference_dwconv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, dilation: int = 1
) -> torch.Tensor:
    """Plain PyTorch: ``F.conv2d(x, weight, bias, padding=dilation * (K - 1) // 2, dilation=dilation, groups=C)``."""
    padding = dilation * (weight.shape[-1] - 1) // 2
    return F.conv2d(x, weight, bias, stride=1, padding=padding, dilation=dilation, groups=x.shape[1])


register_impl("reference", reference_dwconv2d)
register_dilated_impl("reference", reference_dwconv2d)


def dilate_kernel(weight: torch.Tensor, dilation: int) -> torch.Tensor:
    """The dense ``(C, 1, r (K - 1) + 1, ...)`` kernel equal to ``weight`` applied with dilation ``r``.

    The taps land ``r`` apart with zeros between them (differentiable: the gradient of each tap is the dense
    gradient at its position).
    """
    if dilation == 1:
        return weight
    channels, _, kernel_size, _ = weight.shape
    size = dilation * (kernel_size - 1) + 1
    dense = weight.new_zeros(channels, 1, size, size)
    dense[:, :, ::dilation, ::dilation] = weight
    return dense


def _check_args(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int = 1) -> None:
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
    if isinstance(dilation, bool) or not isinstance(dilation, int) or dilation < 1:
        raise ValueError(f"dwconv2d expects a dilation that is a positive int, got {dilation!r}")


def _choose_auto(x: torch.Tensor, weight: torch.Tensor) -> str:
    """The implementation ``impl="auto"`` uses for this input (the device's rule, else ``reference``)."""
    rule = _AUTO_RULES.get(x.device.type)
    choice = rule(x, weight) if rule is not None else None
    return choice if choice is not None else "reference"


def auto_dwconv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """The dilation-1 convolution by the implementation the device's auto rule picks, whatever ``impl_override``
    says: for implementations built on others (an override naming the outer one must not recurse into it)."""
    return _IMPLS[_choose_auto(x, weight)](x, weight, bias)


def _choose_dilated_auto(x: torch.Tensor, weight: torch.Tensor, dilation: int) -> str:
    rule = _DILATED_AUTO_RULES.get(x.device.type)
    choice = rule(x, weight, dilation) if rule is not None else None
    return choice if choice is not None else "reference"


def _dilated_dwconv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, impl: str, dilation: int
) -> torch.Tensor:
    if impl == "auto":
        impl = _choose_dilated_auto(x, weight, dilation)
    fn = _DILATED_IMPLS.get(impl)
    if fn is not None:
        return fn(x, weight, bias, dilation)
    dense_fn = _IMPLS.get(impl)
    if dense_fn is None:
        raise ValueError(f"unknown depthwise conv impl {impl!r}; available: {available_impls()}")
    return dense_fn(x, dilate_kernel(weight, dilation), bias)


def dwconv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    impl: str = "auto",
    dilation: int = 1,
) -> torch.Tensor:
    """Depthwise 2-D convolution, stride 1, same padding (``padding = dilation * (K - 1) // 2``).

    Args:
        x: input ``(N, C, H, W)``, NCHW or channels_last; the output keeps its memory format.
        weight: ``(C, 1, K, K)`` with odd ``K``.
        bias: optional ``(C,)``.
        impl: ``"auto"`` (fastest correct path for the shape) or a name from ``available_impls()``. With
            ``dilation > 1``, an implementation without a dilated form runs on the dense equivalent kernel.
        dilation: spacing of the kernel taps (UniRepLKNet's dilated branches).
    """
    _check_args(x, weight, bias, dilation)
    forced = getattr(_override, "name", None)
    if forced is not None and forced != "auto":
        impl = forced
    if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling():
        impl = "reference"
    if dilation != 1 or (impl not in _IMPLS and impl in _DILATED_IMPLS):
        return _dilated_dwconv2d(x, weight, bias, impl, dilation)
    if impl == "auto":
        impl = _choose_auto(x, weight)
    fn = _IMPLS.get(impl)
    if fn is None:
        raise ValueError(f"unknown depthwise conv impl {impl!r}; available: {available_impls()}")
    return fn(x, weight, bias)
