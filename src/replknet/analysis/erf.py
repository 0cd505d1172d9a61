"""Effective receptive field (ERF): the contribution map and high-contribution area ratio of the RepLKNet paper.

Follows the official scripts (``erf/visualize_erf.py``, ``erf/analyze_erf.py``, Ding et al., CVPR 2022, Sec. 5):
each image is resized to 1024x1024 (bicubic) and normalised with the ImageNet mean/std; the contribution of the
input to the centre point of a feature map is ``relu(d/dx sum_c relu(feature[:, c, H//2, W//2]))`` summed over
the input channels; maps are averaged over images, skipping NaN maps. The area ratio is computed on the
``log10(map + 1) / max`` map: the smallest centred square holding more than ``t`` of its sum, for
``t = 0.2, 0.3, 0.5, 0.99``.

Only the input gradient is needed, so the parameters are frozen while the maps are computed: the backward pass
then runs only the input-gradient path of every layer (for RepLKNet, through ``replknet.ops``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DEFAULT_THRESHOLDS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AreaRatio",
    "ErfResult",
    "RadialProfile",
    "radial_profile",
    "ImageFiles",
    "area_ratios",
    "compute_erf",
    "contribution_map",
    "erf_transform",
    "feature_extractor",
    "list_images",
    "log_normalize",
    "reset_zero_init_norms",
]

_logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_THRESHOLDS = (0.2, 0.3, 0.5, 0.99)
# torchvision's ImageFolder extensions.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

FeatureFn = Callable[[torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------- area ratio (analyze_erf.py)
@dataclass(frozen=True)
class AreaRatio:
    """The smallest centred square holding more than ``threshold`` of a (log-normalised) contribution map.

    Attributes:
        threshold: the fraction of the map's sum the square must exceed.
        side: the square's side in pixels.
        ratio: the high-contribution area ratio, ``side**2 / (H * W)``.
        reached: False when no square the official search tries reaches the threshold (see ``area_ratios``).
    """

    threshold: float
    side: int
    ratio: float
    reached: bool = True


def log_normalize(contribution: np.ndarray) -> np.ndarray:
    """``log10(map + 1) / max``: the official rescaling that makes maps of different models comparable."""
    data = np.log10(np.asarray(contribution, dtype=np.float64) + 1.0)
    peak = data.max()
    if not np.isfinite(peak) or peak <= 0:
        raise ValueError(f"cannot normalise a contribution map whose log10(x+1) maximum is {peak} (all zero or NaN?)")
    return data / peak


def area_ratios(
    contribution: np.ndarray, thresholds: Sequence[float] = DEFAULT_THRESHOLDS, normalize: bool = True
) -> list[AreaRatio]:
    """High-contribution area ratios of a contribution map, as the official ``analyze_erf.py`` computes them.

    Args:
        contribution: a non-negative ``(H, W)`` map (the raw mean contribution map).
        thresholds: fractions of the map's total in ``(0, 1)``.
        normalize: apply ``log_normalize`` first, as the official script does (False: use the map as given).

    Returns:
        One ``AreaRatio`` per threshold: squares of side ``2i + 1`` centred on ``(H // 2, W // 2)`` grow from
        ``i = 1`` and the first whose sum exceeds ``threshold`` of the total is taken.
    """
    data = np.asarray(contribution, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError(f"a contribution map must be 2-D (H, W), got shape {data.shape}")
    if not np.isfinite(data).all() or (data < 0).any():
        raise ValueError("a contribution map must be finite and non-negative")
    for threshold in thresholds:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"thresholds must lie in (0, 1), got {threshold}")
    if normalize:
        data = log_normalize(data)
    height, width = data.shape
    total = data.sum()
    if total <= 0:
        raise ValueError("a contribution map that sums to zero has no area ratio")
    # NOTE: the official loop runs i = 1 .. h//2 - 1 on square maps; min(h, w) extends it to rectangles. The
    # official script returns None (and then fails) when no such square passes; we return the whole map instead
    # (side min(h, w), ratio 1.0) with reached=False.
    half = min(height, width) // 2
    radii = np.arange(1, half)
    # Summed-area table: the sum of every centred square at once.
    table = np.zeros((height + 1, width + 1))
    table[1:, 1:] = data.cumsum(0).cumsum(1)
    top, left = height // 2 - radii, width // 2 - radii
    bottom, right = height // 2 + 1 + radii, width // 2 + 1 + radii
    square_sums = table[bottom, right] - table[top, right] - table[bottom, left] + table[top, left]
    fractions = square_sums / total
    results = []
    for threshold in thresholds:
        passed = np.nonzero(fractions > threshold)[0]
        if passed.size:
            side = 2 * int(radii[passed[0]]) + 1
            results.append(AreaRatio(float(threshold), side, side * side / (height * width)))
        else:
            side = min(height, width)
            results.append(AreaRatio(float(threshold), side, 1.0, reached=False))
    return results


# ---------------------------------------------------------------------- radial profile
@dataclass(frozen=True)
class RadialProfile:
    """Cumulative share of a contribution map within each distance of the centre.

    Attributes:
        radii: ``0, 1, 2, ...`` pixels, up to the farthest pixel.
        cumulative: ``cumulative[i]`` = (sum of the map over pixels at most ``radii[i]`` from the centre) / total.
    """

    radii: np.ndarray
    cumulative: np.ndarray

    def radius_at(self, fraction: float) -> int:
        """The smallest radius holding at least ``fraction`` of the map."""
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
        return int(self.radii[np.searchsorted(self.cumulative, fraction - 1e-12)])


def radial_profile(
    contribution: np.ndarray, normalize: bool = False, center: tuple[int, int] | None = None
) -> RadialProfile:
    """How a contribution map's mass grows with the distance from its centre (one curve per model in a plot).

    A heatmap shows where the map is large; this curve shows how far the contribution reaches, including a
    long faint tail that the heatmap's colour scale hides.

    Args:
        contribution: a non-negative ``(H, W)`` map (e.g. ``ErfResult.contribution``).
        normalize: apply the official ``log_normalize`` first, as the area ratio does (default: the raw map,
            i.e. the share of the gradient itself).
        center: ``(row, col)`` of the centre; default ``(H // 2, W // 2)``, the centre ``area_ratios`` uses.

    Returns:
        a ``RadialProfile``: pixel ``(y, x)`` counts from radius ``ceil(sqrt((y - cy)^2 + (x - cx)^2))`` on.
    """
    data = np.asarray(contribution, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError(f"a contribution map must be 2-D (H, W), got shape {data.shape}")
    if not np.isfinite(data).all() or (data < 0).any():
        raise ValueError("a contribution map must be finite and non-negative")
    if normalize:
        data = log_normalize(data)
    height, width = data.shape
    cy, cx = center if center is not None else (height // 2, width // 2)
    if not (0 <= cy < height and 0 <= cx < width):
        raise ValueError(f"center {center} lies outside the {height}x{width} map")
    total = data.sum()
    if total <= 0:
        raise ValueError("a contribution map that sums to zero has no radial profile")
    yy, xx = np.mgrid[:height, :width]
    # ceil with a small tolerance, so that a pixel exactly r away (e.g. (3, 4) -> 5) counts at r.
    ring = np.ceil(np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) - 1e-9).astype(np.int64)
    cumulative = np.cumsum(np.bincount(ring.ravel(), weights=data.ravel())) / total
    return RadialProfile(radii=np.arange(len(cumulative)), cumulative=np.minimum(cumulative, 1.0))


# ---------------------------------------------------------------------- the contribution map (visualize_erf.py)
class _StopForward(Exception):
    """Raised by the feature hook once the chosen layer has run, so the rest of the model is skipped."""


def _hooked_feature(model: nn.Module, layer: str) -> FeatureFn:
    modules = dict(model.named_modules())
    if layer not in modules:
        names = [name for name in modules if name][:12]
        raise ValueError(f"model {type(model).__name__} has no layer named {layer!r}; some of its layers: {names}")
    module = modules[layer]

    def run(x: torch.Tensor) -> torch.Tensor:
        captured: list = []

        def hook(_module: nn.Module, _inputs, output) -> None:
            captured.append(output)
            raise _StopForward

        handle = module.register_forward_hook(hook)
        try:
            model(x)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError(f"layer {layer!r} did not run in the model's forward pass")
        return captured[0]

    return run


def feature_extractor(model: nn.Module, layer: str | None = None) -> FeatureFn:
    """The function mapping an input batch to the feature map whose centre point the ERF is measured for.

    Args:
        model: any ``nn.Module``.
        layer: a module name (``model.named_modules()``) whose output is taken with a forward hook. Default: the
            last stage's output before the final norm for models with timm's ``forward_intermediates`` (every
            RepLKNet, and timm models such as ResNet, where it is ``layer4``), else the model's own output (the last
            one when it returns a list, as timm's ``features_only`` models do).
    """
    if layer is not None:
        return _hooked_feature(model, layer)
    if hasattr(model, "forward_intermediates"):
        # timm convention: an int n asks for the last n feature levels, before the final norm (norm=False).
        return lambda x: model.forward_intermediates(x, indices=1, intermediates_only=True)[-1]

    def run(x: torch.Tensor) -> torch.Tensor:
        output = model(x)
        return output[-1] if isinstance(output, (list, tuple)) and output else output

    return run


def _check_feature(feature, layer: str | None) -> torch.Tensor:
    where = f"layer {layer!r}" if layer else "the model's feature"
    if not isinstance(feature, torch.Tensor) or feature.dim() != 4:
        shape = tuple(feature.shape) if isinstance(feature, torch.Tensor) else type(feature).__name__
        raise ValueError(f"{where} must be a 4-D (N, C, H, W) tensor for an ERF, got {shape}")
    return feature


def contribution_map(feature_fn: FeatureFn, x: torch.Tensor, layer: str | None = None) -> torch.Tensor:
    """One image's contribution map: the official ``get_input_grad``.

    Args:
        feature_fn: input batch -> feature map (see ``feature_extractor``).
        x: the input ``(N, C, H, W)`` (the official scripts use N = 1).
        layer: only used to name the layer in error messages.

    Returns:
        ``(H, W)``: ``relu(grad_x sum_c relu(feature[:, c, h // 2, w // 2]))`` summed over batch and channels.
    """
    return _contribution_and_shape(feature_fn, x, layer)[0]


def _contribution_and_shape(
    feature_fn: FeatureFn, x: torch.Tensor, layer: str | None
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        feature = _check_feature(feature_fn(x), layer)  # (N, C, h, w)
        height, width = feature.shape[-2:]
        central = F.relu(feature[:, :, height // 2, width // 2]).sum()
        if not central.requires_grad:
            raise RuntimeError("the feature map does not depend on the input, so it has no receptive field")
        (grad,) = torch.autograd.grad(central, x)
    return F.relu(grad).sum(dim=(0, 1)), tuple(feature.shape[1:])  # (H, W), (C, h, w)


@contextlib.contextmanager
def _analysis_mode(model: nn.Module) -> Iterator[None]:
    """eval() and frozen parameters while maps are computed; the previous state is restored afterwards."""
    modes = [(module, module.training) for module in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def _grad_checkpointing(model: nn.Module, enable: bool) -> Iterator[None]:
    if not enable:
        yield
        return
    if not hasattr(model, "set_grad_checkpointing"):
        raise ValueError(f"{type(model).__name__} has no set_grad_checkpointing(); run without grad_checkpointing")
    previous = bool(getattr(model, "grad_checkpointing", False))
    model.set_grad_checkpointing(True)
    try:
        yield
    finally:
        model.set_grad_checkpointing(previous)


@dataclass
class ErfResult:
    """The mean contribution map of one model and what went into it.

    Attributes:
        contribution: ``(H, W)`` float64 mean contribution map (the official ``.npy``).
        num_images: images averaged.
        num_skipped: images skipped because their map was not finite.
        feature_shape: ``(C, h, w)`` of the feature map the centre point was taken from.
        seconds: wall time spent computing the maps.
    """

    contribution: np.ndarray
    num_images: int
    num_skipped: int
    feature_shape: tuple[int, int, int]
    seconds: float

    def area_ratios(self, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> list[AreaRatio]:
        """The high-contribution area ratios of ``contribution`` (see ``area_ratios``)."""
        return area_ratios(self.contribution, thresholds)


def compute_erf(
    model: nn.Module,
    images: Iterable[torch.Tensor],
    num_images: int | None = None,
    layer: str | None = None,
    grad_checkpointing: bool = False,
) -> ErfResult:
    """The aggregated contribution map of ``model`` over ``images``, exactly as the official scripts compute it.

    Args:
        model: any model (random init or loaded weights); it is put in eval mode with frozen parameters for the
            duration and restored afterwards.
        images: input tensors ``(C, H, W)`` or ``(1, C, H, W)``, already transformed (see ``erf_transform``).
        num_images: stop after this many usable (finite) maps; default all images.
        layer: feature layer name (see ``feature_extractor``); default the last stage before the final norm.
        grad_checkpointing: recompute activations in the backward pass (timm's ``set_grad_checkpointing``) to
            keep memory small at 1024x1024; same map, about one more forward pass of time.
    """
    if num_images is not None and num_images < 1:
        raise ValueError(f"num_images must be at least 1, got {num_images}")
    feature_fn = feature_extractor(model, layer)
    reference = next(iter(model.parameters()), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None and reference.is_floating_point() else torch.float32
    total: torch.Tensor | None = None
    used = skipped = 0
    feature_shape: tuple[int, int, int] = (0, 0, 0)
    start = time.perf_counter()
    with _analysis_mode(model), _grad_checkpointing(model, grad_checkpointing):
        for image in images:
            if num_images is not None and used >= num_images:
                break
            if image.dim() == 3:
                image = image.unsqueeze(0)
            if image.dim() != 4 or image.shape[0] != 1:
                raise ValueError(f"ERF images must be (C, H, W) or (1, C, H, W), got shape {tuple(image.shape)}")
            image = image.to(device=device, dtype=dtype)
            contribution, feature_shape = _contribution_and_shape(feature_fn, image, layer)
            contribution = contribution.double()
            # NOTE: the official script skips maps whose sum is NaN; we skip any non-finite map (an inf would
            # otherwise poison the mean just as a NaN does).
            if not torch.isfinite(contribution).all():
                skipped += 1
                _logger.warning("non-finite contribution map, image skipped (%d skipped so far)", skipped)
                continue
            # NOTE: accumulated in float64 (the official AverageMeter sums float32 maps); the mean is the same.
            total = contribution if total is None else total + contribution
            used += 1
    if total is None:
        raise ValueError(f"no usable images: {skipped} gave non-finite maps and no other image was given")
    if num_images is not None and used < num_images:
        _logger.warning("only %d usable images (asked for %d)", used, num_images)
    return ErfResult(
        contribution=(total / used).cpu().numpy(),
        num_images=used,
        num_skipped=skipped,
        feature_shape=feature_shape,
        seconds=time.perf_counter() - start,
    )


def reset_zero_init_norms(model: nn.Module) -> int:
    """Give normalisation layers whose scale was initialised to exactly zero PyTorch's default scale of one.

    timm zero-initialises the last BN of each residual branch (``zero_init_last``): at random init every residual
    branch then outputs zero and the ERF would be that of the shortcut path alone. Returns the number reset.
    """
    count = 0
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)):
                weight = getattr(module, "weight", None)
                if weight is not None and weight.numel() and not weight.any():
                    weight.fill_(1.0)
                    count += 1
    if count:
        _logger.info("reset %d zero-initialised norm scales to 1", count)
    return count


# ---------------------------------------------------------------------- images
def erf_transform(size: int = 1024, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
    """The official transform: ``Resize((size, size), BICUBIC)`` -> ``ToTensor`` -> ``Normalize(mean, std)``."""
    from torchvision import transforms

    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    return transforms.Compose(
        [
            transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def list_images(root: str | os.PathLike) -> list[Path]:
    """Image files under ``root``: a flat folder, or the ImageNet-val layout (one sub-folder per class).

    The order is ``torchvision.datasets.ImageFolder``'s (class folders sorted, files sorted within each), so the
    first ``n`` images are those the official script's sequential sampler takes.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    flat = _image_files(root)
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    nested = []
    for class_dir in classes:
        for dirpath, dirnames, _ in sorted(os.walk(class_dir, followlinks=True)):
            dirnames.sort()
            nested.extend(_image_files(Path(dirpath)))
    if flat and nested:
        raise ValueError(
            f"{root} holds both image files ({len(flat)}) and class folders with images ({len(nested)}); "
            "give a flat folder or an ImageNet-val style folder of class folders, not both"
        )
    images = flat or nested
    if not images:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {root}")
    return images


class ImageFiles(Sequence):
    """Image files as ERF inputs: each item is the transformed ``(3, size, size)`` tensor."""

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        size: int = 1024,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.transform = erf_transform(size, mean, std)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):
        if isinstance(index, slice):
            raise TypeError("ImageFiles does not support slicing; index one image at a time")
        from replknet.data.images import read_image

        return self.transform(read_image(self.paths[index]))  # ImageReadError (a ValueError) names a bad file
