"""Shape-bias figure in the style of model-vs-human (Geirhos et al., 2021): per-category markers, the average marked.

The x axis runs from shape (left) to texture (right): the bottom axis is the fraction of texture decisions, the top
axis the fraction of shape decisions, as in the original figure.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from replknet.analysis.shape_bias import ShapeBiasResult

_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">", "p", "h", "d", "8", "H", "o")


def plot_shape_bias(
    results: Mapping[str, ShapeBiasResult],
    path: str | os.PathLike | None = None,
    categories: Sequence[str] | None = None,
    title: str | None = None,
):
    """Draw one row per model: a marker per shape category at its shape bias, a bar at the model's average.

    NOTE: the model-vs-human figure puts categories on the rows and draws each model's average as a vertical
    line across them; with one row per model the per-model spread and the ranking read at a glance, which is what
    comparing kernel sizes needs. The axes (texture fraction below, shape fraction above) are the original's.

    Args:
        results: model label -> its result, drawn top to bottom in this order.
        path: where to save the figure (format from the suffix); not saved when None.
        categories: the categories to mark, in legend order; by default those of the first result.
        title: an optional figure title.

    Returns:
        The matplotlib ``Figure``.
    """
    # NOTE: a bare Figure (no pyplot) leaves the caller's backend and global figure list alone.
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    if not results:
        raise ValueError("no results to plot")
    labels = list(results)
    if categories is None:
        categories = [str(name) for name in next(iter(results.values())).per_category]
    colors = colormaps["tab20"].colors
    figure = Figure(figsize=(9.0, 2.4 + 0.5 * len(labels)), layout="constrained")
    axis = figure.subplots()
    axis.set_xlim(0.0, 1.0)
    axis.set_ylim(len(labels) - 0.5, -0.5)
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("Fraction of 'texture' decisions")
    top = axis.secondary_xaxis("top", functions=(lambda x: 1 - x, lambda x: 1 - x))
    top.set_xlabel("Fraction of 'shape' decisions")
    axis.grid(axis="x", color="0.9")
    for row, label in enumerate(labels):
        per_category = {str(name): counts for name, counts in results[label].per_category.items()}
        for position, category in enumerate(categories):
            counts = per_category.get(category)
            if counts is None or math.isnan(counts.shape_bias):
                continue
            # a small fixed vertical offset per category keeps equal values from hiding each other
            axis.scatter(
                1.0 - counts.shape_bias,
                row + 0.36 * (position / max(len(categories) - 1, 1) - 0.5),
                marker=_MARKERS[position % len(_MARKERS)],
                color=colors[position % len(colors)],
                s=45,
                alpha=0.85,
                edgecolors="white",
                linewidths=0.5,
                zorder=3,
                clip_on=False,
            )
        average = results[label].shape_bias
        if not math.isnan(average):
            axis.plot([1.0 - average] * 2, [row - 0.38, row + 0.38], color="black", linewidth=2.5, zorder=4)
            axis.annotate(
                f"{average:.2f}",
                (1.0 - average, row - 0.38),
                textcoords="offset points",
                xytext=(3, 1),
                fontsize=8,
                va="bottom",
            )
    handles = [
        Line2D(
            [],
            [],
            linestyle="",
            marker=_MARKERS[i % len(_MARKERS)],
            color=colors[i % len(colors)],
            label=category,
        )
        for i, category in enumerate(categories)
    ]
    handles.append(Line2D([], [], color="black", linewidth=2.5, label="average (shape bias)"))
    figure.legend(handles=handles, loc="outside lower center", ncol=6, fontsize=8, frameon=False)
    if title:
        axis.set_title(title)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=150)
    return figure
