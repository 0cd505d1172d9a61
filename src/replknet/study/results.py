"""Study results: per-seed records, mean and spread per arm, paired differences between arms, files.

``results.json`` (schema ``replknet-study-v1``)::

    {"study": NAME, "setting": "quick"|"full", "seeds": [...], "task": {TASK: {...}},
     "arms": {ARM: {"model": NAME, "task": TASK, "settings": {...}, "metric": "top1"|"miou"|...,
                    "per_seed": [...], "seeds": [...], "mean": x, "std": y, "extra": {...}}},
     "comparisons": [{"better": ARM, "than": ARM, "task": TASK, "metric": ..., "per_seed": [...],
                      "mean": d, "std": s, "ci95": [lo, hi], "paper": p, "paper_note": "..."}],
     "paper": {...}, "claim": "...", "guideline": "...", "created": ISO time, "command": "..."}

ARM is the arm's label for a single-task study and ``LABEL@TASK`` when the study has several tasks.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "SCHEMA",
    "summarize",
    "paired_difference",
    "arm_key",
    "validate_results",
    "write_json_atomic",
    "write_results",
    "format_table",
]

SCHEMA = "replknet-study-v1"

# Two-sided 95% Student t quantiles by degrees of freedom (1..30); 1.96 beyond.
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
    2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def _t95(dof: int) -> float:
    return _T95[dof - 1] if dof <= len(_T95) else 1.96


def summarize(values: Sequence[float]) -> dict:
    """``n``, ``mean``, ``std`` (sample standard deviation, 0 for one value) and a 95% t interval of the mean."""
    data = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if data.size == 0:
        return {"n": 0, "mean": None, "std": None, "ci95": None}
    mean = float(data.mean())
    std = float(data.std(ddof=1)) if data.size > 1 else 0.0
    half = _t95(data.size - 1) * std / math.sqrt(data.size) if data.size > 1 else None
    return {
        "n": int(data.size),
        "mean": mean,
        "std": std,
        "ci95": [mean - half, mean + half] if half is not None else None,
    }


def paired_difference(a: dict[int, float], b: dict[int, float]) -> dict:
    """``a - b`` paired by seed (the seeds both have): per-seed differences and their summary."""
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    return {"seeds": seeds, "per_seed": diffs, **summarize(diffs)}


def arm_key(label: str, task: str, multi_task: bool) -> str:
    return f"{label}@{task}" if multi_task else label


def validate_results(results: dict) -> dict:
    """Check that ``results`` follows the schema; raises ``ValueError`` naming the first problem."""
    for key in ("study", "task", "arms", "paper", "comparisons", "setting", "seeds"):
        if key not in results:
            raise ValueError(f"results lack {key!r}")
    if not isinstance(results["arms"], dict) or not results["arms"]:
        raise ValueError("results have no arms")
    for name, arm in results["arms"].items():
        for key in ("model", "settings", "metric", "per_seed", "mean", "std", "task"):
            if key not in arm:
                raise ValueError(f"arm {name!r} lacks {key!r}")
        if arm["task"] not in results["task"]:
            raise ValueError(f"arm {name!r} names task {arm['task']!r}, not in the results' tasks")
        values = [v for v in arm["per_seed"] if v is not None]
        if values and not math.isclose(arm["mean"], float(np.mean(values)), rel_tol=1e-9, abs_tol=1e-12):
            raise ValueError(f"arm {name!r}: mean {arm['mean']} is not the mean of per_seed {arm['per_seed']}")
    for comparison in results["comparisons"]:
        for key in ("better", "than", "task", "per_seed", "mean", "std", "paper"):
            if key not in comparison:
                raise ValueError(f"a comparison lacks {key!r}: {comparison}")
    return results


def write_json_atomic(path: str | os.PathLike, data) -> Path:
    """JSON to a temporary file in the same folder, then renamed over ``path`` (readers never see half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
        json.dump(data, handle, indent=2, default=_json_default)
        handle.write("\n")
    os.chmod(handle.name, 0o644)
    os.replace(handle.name, path)
    return path


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return str(value)


def write_results(out_dir: str | os.PathLike, results: dict) -> dict[str, Path]:
    """``results.json``, ``results.csv`` (one row per arm and seed) and ``summary.csv`` (one row per arm and
    comparison) under ``out_dir``."""
    out = Path(out_dir)
    validate_results(results)
    files = {"json": write_json_atomic(out / "results.json", results)}
    rows = []
    for name, arm in results["arms"].items():
        for seed, value in zip(arm.get("seeds", []), arm["per_seed"]):
            rows.append([results["study"], arm["task"], name, arm["model"], seed, arm["metric"], value])
    files["csv"] = _write_csv(out / "results.csv", ["study", "task", "arm", "model", "seed", "metric", "value"], rows)
    summary = [
        ["arm", name, "", arm["task"], arm["metric"], len(arm["per_seed"]), arm["mean"], arm["std"], ""]
        for name, arm in results["arms"].items()
    ]
    for c in results["comparisons"]:
        summary.append(
            ["difference", c["better"], c["than"], c["task"], c["metric"], len(c["per_seed"]), c["mean"], c["std"],
             "" if c["paper"] is None else c["paper"]]
        )  # fmt: skip
    header = ["kind", "arm", "minus", "task", "metric", "n", "mean", "std", "paper"]
    files["summary"] = _write_csv(out / "summary.csv", header, summary)
    return files


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    os.chmod(handle.name, 0o644)
    os.replace(handle.name, path)
    return path


def _fmt(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(results: dict) -> str:
    """The arms (mean +- std over seeds, then each seed) and the differences, with the paper's number beside."""
    lines = [f"study {results['study']} ({results['setting']}, seeds {results['seeds']}): {results.get('claim', '')}"]
    width = max(len(name) for name in results["arms"]) + 2
    metric_width = max(len("metric"), *(len(arm["metric"]) for arm in results["arms"].values())) + 2
    lines.append(f"{'arm':<{width}}{'metric':<{metric_width}}{'mean':>8}{'std':>8}   per seed")
    for name, arm in results["arms"].items():
        per_seed = ", ".join(_fmt(v) for v in arm["per_seed"])
        mean, std = _fmt(arm["mean"]), _fmt(arm["std"])
        lines.append(f"{name:<{width}}{arm['metric']:<{metric_width}}{mean:>8}{std:>8}   {per_seed}")
    if results["comparisons"]:
        names = [f"{c['better']} - {c['than']}" for c in results["comparisons"]]
        name_width = max(len("difference"), *map(len, names)) + 2
        task_width = max(len("task"), *(len(c["task"]) for c in results["comparisons"])) + 2
        lines.append("")
        lines.append(f"{'difference':<{name_width}}{'task':<{task_width}}{'mean':>8}{'std':>8}{'95% CI':>20}   paper")
        for name, c in zip(names, results["comparisons"]):
            ci = "-" if c["ci95"] is None else f"[{c['ci95'][0]:.2f}, {c['ci95'][1]:.2f}]"
            paper = _fmt(c["paper"]) if c["paper"] is not None else ""
            note = f"{paper} {c.get('paper_note', '')}".strip()
            mean, std = _fmt(c["mean"]), _fmt(c["std"])
            lines.append(f"{name:<{name_width}}{c['task']:<{task_width}}{mean:>8}{std:>8}{ci:>20}   {note}")
    return "\n".join(lines)
