"""Study figures: the metric per arm with every seed shown, and the ERF radial profiles (matplotlib only)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["plot_arms", "plot_erf_profiles"]

_METRIC_LABELS = {
    "top1": "validation top-1 (%)",
    "miou": "validation mIoU (%)",
    "shape_bias": "shape bias (cue conflict)",
    "dw_share": "depthwise share of forward time (%)",
    "erf_area_ratio_t50": "ERF area ratio at t = 50% (%)",
}


def plot_arms(results: dict, path: str | os.PathLike) -> Path:
    """One panel per task: each seed as a dot, the mean as a bar with +-1 standard deviation."""
    from matplotlib.figure import Figure

    tasks = list(results["task"])
    figure = Figure(figsize=(max(4.0, 1.2 * len(results["arms"]) / len(tasks) + 1.5) * len(tasks), 3.8), dpi=100)
    axes_list = figure.subplots(1, len(tasks), squeeze=False)[0]
    for axes, task in zip(axes_list, tasks):
        arms = [(name, arm) for name, arm in results["arms"].items() if arm["task"] == task]
        for x, (_, arm) in enumerate(arms):
            values = [v for v in arm["per_seed"] if v is not None]
            if arm["mean"] is not None:
                axes.bar(x, arm["mean"], width=0.6, color=f"C{x % 10}", alpha=0.35)
                axes.errorbar(x, arm["mean"], yerr=arm["std"] or 0.0, color="black", capsize=4, linewidth=1)
            jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(len(values))
            axes.scatter(x + jitter, values, color=f"C{x % 10}", edgecolor="black", zorder=3, s=22)
        labels = [name.split("@")[0] for name, _ in arms]
        axes.set_xticks(range(len(arms)), labels, rotation=30, ha="right", fontsize=8)
        metric = results["task"][task]["metric"]
        axes.set_ylabel(_METRIC_LABELS.get(metric, metric))
        values = [v for _, a in arms for v in a["per_seed"] if v is not None]
        if values:
            low, high = min(values), max(values)
            span = max(high - low, 1.0)
            axes.set_ylim(max(0.0, low - 0.6 * span) if metric != "shape_bias" else 0.0, high + 0.4 * span)
        axes.set_title(f"{task}", fontsize=10)
        axes.grid(axis="y", alpha=0.3)
    figure.suptitle(f"replknet study {results['study']} ({results['setting']}, {len(results['seeds'])} seeds)")
    figure.set_layout_engine("constrained")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def plot_erf_profiles(records: list[dict], path: str | os.PathLike) -> Path:
    """ERF radial profiles of the trained arms: one curve per arm (mean over seeds, range shaded)."""
    from replknet.analysis.erf import RadialProfile
    from replknet.analysis.erf_plot import plot_radial_profiles

    profiles: dict[str, list[RadialProfile]] = {}
    for record in records:
        curve = record.get("extra", {}).get("radial_profile")
        if curve:
            cumulative = np.asarray(curve, dtype=np.float64)
            profiles.setdefault(record["arm"], []).append(RadialProfile(np.arange(len(cumulative)), cumulative))
    if not profiles:
        raise ValueError("no ERF radial profiles in the records")
    return plot_radial_profiles(profiles, path, title="ERF of the trained arms: contribution within a distance")
