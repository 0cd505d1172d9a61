"""Figures of ERF contribution maps in the paper's style (matplotlib only, no pyplot state)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from replknet.analysis.erf import AreaRatio, RadialProfile, log_normalize

__all__ = [
    "erf_colormap",
    "plot_erf",
    "plot_erf_comparison",
    "decades_below_peak",
    "draw_radial_profiles",
    "plot_radial_profiles",
]


def erf_colormap():
    """The official heatmap's colours: seaborn ``cmap='RdYlGn', center=0`` on a map scaled to [0, 1].

    Centring a diverging map at 0 for data in [0, 1] keeps only its upper half (yellow to dark green).
    """
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    return ListedColormap(colormaps["RdYlGn"](np.linspace(0.5, 1.0, 256)), name="erf_RdYlGn")


def _ratio_caption(ratios: Sequence[AreaRatio]) -> str:
    return "  ".join(f"t={r.threshold:.0%}: {100 * r.ratio:.1f}%" for r in ratios)


def plot_erf(
    contribution: np.ndarray,
    path: str | os.PathLike,
    title: str | None = None,
    ratios: Sequence[AreaRatio] | None = None,
) -> Path:
    """One model's heatmap of the ``log10(x+1)/max`` map, as the official script draws it (10x10.75 in, dpi 40).

    Args:
        contribution: the raw mean contribution map ``(H, W)``.
        path: output image file (``.png``).
        title: drawn above the map.
        ratios: area ratios written below the map.
    """
    from matplotlib.figure import Figure

    data = log_normalize(contribution)
    figure = Figure(figsize=(10, 10.75), dpi=40)
    axes = figure.add_subplot()
    image = axes.imshow(data, cmap=erf_colormap(), vmin=0.0, vmax=1.0, interpolation="nearest")
    axes.set_xticks([])
    axes.set_yticks([])
    if title:
        axes.set_title(title, fontsize=24)
    if ratios:
        axes.set_xlabel(_ratio_caption(ratios), fontsize=16)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.02)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def _as_curves(value: RadialProfile | Sequence[RadialProfile]) -> list[RadialProfile]:
    return [value] if isinstance(value, RadialProfile) else list(value)


def draw_radial_profiles(axes, profiles: Mapping[str, RadialProfile | Sequence[RadialProfile]]) -> None:
    """Cumulative contribution against distance from the centre on ``axes``: one curve per label.

    A label with several profiles (seeds) is drawn as their mean with the range between the lowest and highest
    shaded. The radius holding half the contribution is marked on each curve.
    """
    if not profiles:
        raise ValueError("draw_radial_profiles needs at least one profile")
    longest = 0
    for index, (label, value) in enumerate(profiles.items()):
        curves = _as_curves(value)
        length = max(len(c.cumulative) for c in curves)
        longest = max(longest, length)
        stacked = np.stack([np.pad(c.cumulative, (0, length - len(c.cumulative)), constant_values=1.0) for c in curves])
        mean = stacked.mean(axis=0)
        radii = np.arange(length)
        color = f"C{index % 10}"
        axes.plot(radii, mean, color=color, label=label, linewidth=1.6)
        if len(curves) > 1:
            axes.fill_between(radii, stacked.min(axis=0), stacked.max(axis=0), color=color, alpha=0.2, linewidth=0)
        half = int(radii[np.searchsorted(mean, 0.5 - 1e-12)])
        axes.plot([half], [mean[half]], marker="o", color=color, markersize=4)
    axes.axhline(0.5, color="0.6", linewidth=0.8, linestyle=":")
    axes.set_xlim(0, longest - 1)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("distance from the centre (px)")
    axes.set_ylabel("share of the contribution within")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")


def plot_radial_profiles(
    profiles: Mapping[str, RadialProfile | Sequence[RadialProfile]], path: str | os.PathLike, title: str | None = None
) -> Path:
    """A figure of ``draw_radial_profiles``."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.0, 3.8), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    draw_radial_profiles(axes, profiles)
    if title:
        axes.set_title(title, fontsize=11)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def decades_below_peak(contribution: np.ndarray, decades: float = 3.0) -> np.ndarray:
    """``log10(map / max)`` clipped to ``[-decades, 0]``: a scale on which a faint wide tail stays visible."""
    data = np.asarray(contribution, dtype=np.float64)
    peak = data.max()
    if not np.isfinite(peak) or peak <= 0:
        raise ValueError(f"cannot scale a contribution map whose maximum is {peak}")
    with np.errstate(divide="ignore"):
        return np.clip(np.log10(data / peak), -decades, 0.0)


def plot_erf_comparison(
    maps: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    ratios: Mapping[str, Sequence[AreaRatio]] | None = None,
    title: str | None = None,
    profiles: Mapping[str, RadialProfile] | None = None,
    decades: float | None = None,
) -> Path:
    """Side-by-side heatmaps of several models on one colour scale, like the paper's ERF figure.

    Args:
        maps: model label -> raw mean contribution map, drawn left to right in this order.
        path: output image file (``.png``).
        ratios: model label -> its area ratios, written below its map.
        title: figure title.
        profiles: model label -> its radial profile, drawn in one more panel on the right (see
            ``draw_radial_profiles``).
        decades: also draw each map as ``log10(map / max)`` over this many decades, in a second row. NOTE: not
            in the paper; on maps whose raw values are far below 1 (random-init models) the official
            ``log10(x + 1)`` scale is nearly linear and shows only the peak, this one shows the tail too.
    """
    from matplotlib.figure import Figure

    if not maps:
        raise ValueError("plot_erf_comparison needs at least one map")
    count = len(maps)
    extra = 1 if profiles else 0
    rows = 2 if decades else 1
    figure = Figure(figsize=(3.2 * count + 0.8 + 4.2 * extra, 3.9 * rows), dpi=100, layout="constrained")
    grid = figure.add_gridspec(rows, count + extra, width_ratios=[1.0] * count + [1.35] * extra)
    axes_list = [figure.add_subplot(grid[0, i]) for i in range(count)]
    if extra:
        draw_radial_profiles(figure.add_subplot(grid[:, count]), profiles)
    image = None
    for axes, (label, contribution) in zip(axes_list, maps.items()):
        image = axes.imshow(log_normalize(contribution), cmap=erf_colormap(), vmin=0.0, vmax=1.0)
        axes.set_xticks([])
        axes.set_yticks([])
        axes.set_title(label, fontsize=11)
        if ratios and label in ratios:
            caption = [r for r in ratios[label] if r.threshold in (0.2, 0.99)] or list(ratios[label])
            axes.set_xlabel(_ratio_caption(caption), fontsize=8)
    figure.colorbar(image, ax=list(axes_list), fraction=0.03, pad=0.01, label="log10(x+1) / max")
    if decades:
        lower = [figure.add_subplot(grid[1, i]) for i in range(count)]
        for axes, (label, contribution) in zip(lower, maps.items()):
            image = axes.imshow(decades_below_peak(contribution, decades), cmap="magma", vmin=-decades, vmax=0.0)
            axes.set_xticks([])
            axes.set_yticks([])
            axes.set_title(f"{label}: decades below the peak", fontsize=9)
        figure.colorbar(image, ax=lower, fraction=0.03, pad=0.01, label="log10(x / max)")
    if title:
        figure.suptitle(title, fontsize=12)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
