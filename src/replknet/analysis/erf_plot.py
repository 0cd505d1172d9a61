"""Figures of ERF contribution maps in the paper's style (matplotlib only, no pyplot state)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from replknet.analysis.erf import AreaRatio, log_normalize

__all__ = ["erf_colormap", "plot_erf", "plot_erf_comparison"]


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


def plot_erf_comparison(
    maps: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    ratios: Mapping[str, Sequence[AreaRatio]] | None = None,
    title: str | None = None,
) -> Path:
    """Side-by-side heatmaps of several models on one colour scale, like the paper's ERF figure.

    Args:
        maps: model label -> raw mean contribution map, drawn left to right in this order.
        path: output image file (``.png``).
        ratios: model label -> its area ratios, written below its map.
        title: figure title.
    """
    from matplotlib.figure import Figure

    if not maps:
        raise ValueError("plot_erf_comparison needs at least one map")
    count = len(maps)
    figure = Figure(figsize=(3.2 * count + 0.8, 3.9), dpi=100, layout="constrained")
    axes_list = figure.subplots(1, count, squeeze=False)[0]
    image = None
    for axes, (label, contribution) in zip(axes_list, maps.items()):
        image = axes.imshow(log_normalize(contribution), cmap=erf_colormap(), vmin=0.0, vmax=1.0)
        axes.set_xticks([])
        axes.set_yticks([])
        axes.set_title(label, fontsize=11)
        if ratios and label in ratios:
            caption = [r for r in ratios[label] if r.threshold in (0.2, 0.99)] or list(ratios[label])
            axes.set_xlabel(_ratio_caption(caption), fontsize=8)
    figure.colorbar(image, ax=list(axes_list), fraction=0.03, pad=0.01)
    if title:
        figure.suptitle(title, fontsize=12)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
