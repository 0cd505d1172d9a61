"""Running a study: every (task, arm, seed) through the library's own training engines, resumable, DDP-aware.

Layout of an output folder::

    OUT/results.json, results.csv, summary.csv, arms.png (+ erf_profiles.png for the ERF study)
    OUT/runs/<task>/<arm>/seed<k>/          the engine's run folder (checkpoints, metrics)
    OUT/runs/<task>/<arm>/seed<k>/study_run.json    written last: this arm-seed is finished and never redone

Under ``torchrun`` every process runs the same sequence; each training is one DDP run over all processes (the
global batch is split over them), and only rank 0 writes the study files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from replknet.study.arms import RUNNERS, metric_of
from replknet.study.definitions import Arm, Study, Task, get_study, with_tasks
from replknet.study.distributed import agree, init_distributed, world
from replknet.study.results import (
    SCHEMA,
    arm_key,
    paired_difference,
    summarize,
    write_json_atomic,
    write_results,
)

__all__ = ["StudyOptions", "run_study", "resolve_tasks", "build_results", "RUN_RECORD"]

_logger = logging.getLogger(__name__)

RUN_RECORD = "study_run.json"


@dataclass
class StudyOptions:
    """How to run a study (the ``replknet study`` options)."""

    quick: bool = False
    seeds: tuple[int, ...] = (0, 1, 2)
    output: str | None = None  # default runs/study/<name>[-quick]
    data: tuple[str, ...] = ()  # user folders: an ImageFolder (train/, val/) and/or a segmentation folder
    image_size: int | None = None  # overrides every task's image size
    device: str | None = None
    progress: bool = True
    command: str = ""
    tasks: dict[str, Task] = field(default_factory=dict)  # overrides of TASKS (tests: tiny budgets)

    def out_dir(self, study: str) -> Path:
        return Path(self.output or f"runs/study/{study}{'-quick' if self.quick else ''}")


# ---------------------------------------------------------------------------------------------- data folders
def _folder_kind(folder: Path) -> str:
    if not folder.is_dir():
        raise FileNotFoundError(f"--data {folder}: not a directory")
    if (folder / "classes.json").is_file() and (folder / "images").is_dir():
        return "segmentation"
    if (folder / "train").is_dir() and (folder / "val").is_dir():
        return "classification"
    raise ValueError(
        f"--data {folder}: neither an ImageFolder (train/<class>/..., val/<class>/...) nor a segmentation folder "
        "(images/<split>/, annotations/<split>/, classes.json)"
    )


def resolve_tasks(study: Study, options: StudyOptions) -> dict[str, Task]:
    """The study's tasks, with ``--data`` folders in place of the built-in data and ``--image-size`` applied."""
    tasks = with_tasks(study, **options.tasks)
    folders: dict[str, str] = {}
    for folder in options.data:
        kind = _folder_kind(Path(folder))
        if kind in folders:
            raise ValueError(f"two {kind} folders given with --data: {folders[kind]}, {folder}")
        folders[kind] = str(folder)
    resolved = {}
    for name, task in tasks.items():
        if folders and task.kind != "timing":
            if task.kind not in folders:
                raise ValueError(
                    f"study {study.name} trains on a {task.kind} task ({name}); give a {task.kind} folder with --data "
                    f"(got: {', '.join(f'{k} {v}' for k, v in folders.items())})"
                )
            task = dataclasses.replace(task, data=folders[task.kind], options={})
        if options.image_size is not None:
            if task.kind == "segmentation" and options.image_size % 32:
                raise ValueError(f"--image-size {options.image_size}: segmentation needs a multiple of 32")
            task = dataclasses.replace(
                task,
                quick={**task.quick, "image_size": options.image_size},
                full={**task.full, "image_size": options.image_size},
            )
        resolved[name] = task
    if folders and study.analysis == "shape_bias":
        cue = Path(folders["classification"]) / "cue_conflict" / "labels.json"
        if not cue.is_file():
            raise FileNotFoundError(f"the shape-bias study needs {cue} (as `replknet data synth` writes it)")
    return resolved


# ---------------------------------------------------------------------------------------------- the study
def _run_one(study: Study, task: Task, arm: Arm, seed: int, run_dir: Path, options: StudyOptions) -> dict:
    rank, processes = world()
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        has_state = any((run_dir / name).is_file() for name in ("checkpoint.pt", "last.pth", "summary.json"))
        if not has_state and task.kind != "timing":
            # Nothing resumable: leftovers of a run killed before its first checkpoint would only confuse.
            for child in run_dir.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    wall, cpu = time.perf_counter(), time.process_time()
    record = RUNNERS[task.kind](study, task, arm, seed, run_dir, options)
    record.update(
        study=study.name,
        task=task.name,
        arm=arm.label,
        model=arm.model,
        kwargs=arm.to_dict()["kwargs"],
        seed=seed,
        metric=metric_of(study, task),
        setting="quick" if options.quick else "full",
        wall_seconds=time.perf_counter() - wall,
        cpu_seconds=time.process_time() - cpu,
        processes=processes,
        threads=torch.get_num_threads(),
        finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    return record


def run_study(name: str, options: StudyOptions | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Run (or resume) study ``name``; returns the results dict (also written to the output folder).

    Every finished (task, arm, seed) leaves ``study_run.json`` in its run folder and is never run again; an
    interrupted training resumes from its last checkpoint.
    """
    options = options or StudyOptions()
    study = get_study(name)
    tasks = resolve_tasks(study, options)
    if not options.seeds:
        raise ValueError("a study needs at least one seed")
    out = options.out_dir(name)
    owns_group = init_distributed(options.device)
    rank, processes = world()
    log = log or (lambda message: None)
    records: list[dict] = []
    try:
        total = sum(arm.runs_on(t, options.quick) for t in tasks for arm in study.arms) * len(options.seeds)
        count = 0
        for seed in options.seeds:
            for task in tasks.values():
                for arm in study.arms:
                    if not arm.runs_on(task.name, options.quick):
                        continue
                    count += 1
                    run_dir = out / "runs" / task.name / arm.label / f"seed{seed}"
                    path = run_dir / RUN_RECORD
                    done = agree(rank == 0 and path.is_file())
                    if done:
                        if rank == 0:
                            records.append(json.loads(path.read_text()))
                            log(f"[{count}/{total}] {task.name} {arm.label} seed {seed}: done before, kept")
                        continue
                    if rank == 0:
                        log(f"[{count}/{total}] {task.name} {arm.label} seed {seed}: running ({processes} process(es))")
                    record = _run_one(study, task, arm, seed, run_dir, options)
                    if rank == 0:
                        write_json_atomic(path, record)
                        records.append(record)
                        log(
                            f"[{count}/{total}] {task.name} {arm.label} seed {seed}: {metric_of(study, task)} "
                            f"{_fmt(record['value'])} ({record['wall_seconds']:.0f} s)"
                        )
        results = build_results(study, tasks, records, options, processes)
        if rank == 0:
            write_results(out, results)
            _plot(study, results, records, out)
        return results
    finally:
        if owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def build_results(
    study: Study, tasks: dict[str, Task], records: list[dict], options: StudyOptions, processes: int
) -> dict:
    """The results dict (schema in ``replknet.study.results``) from the arm-seed records."""
    multi = len(tasks) > 1
    by_arm: dict[tuple[str, str], dict[int, float]] = {}
    for record in records:
        by_arm.setdefault((record["task"], record["arm"]), {})[record["seed"]] = record["value"]
    arms = {}
    for task in tasks.values():
        budget = task.budget(options.quick)
        for arm in study.arms:
            if not arm.runs_on(task.name, options.quick):
                continue
            values = by_arm.get((task.name, arm.label), {})
            seeds = sorted(values)
            per_seed = [values[s] for s in seeds]
            summary = summarize(per_seed)
            arms[arm_key(arm.label, task.name, multi)] = {
                "model": arm.model,
                "task": task.name,
                "settings": {"kwargs": arm.to_dict()["kwargs"], **arm.settings, **budget},
                "note": arm.note,
                "metric": metric_of(study, task),
                "seeds": seeds,
                "per_seed": per_seed,
                "mean": summary["mean"],
                "std": summary["std"],
                "ci95": summary["ci95"],
                "extra": _extra_summary(records, task.name, arm.label),
            }
    comparisons = []
    for comparison in study.comparisons:
        if comparison.task not in tasks or not study.runs(comparison, options.quick):
            continue  # a task left out, or an arm that only the full study trains
        diff = paired_difference(
            {s: v for s, v in by_arm.get((comparison.task, comparison.better), {}).items() if v is not None},
            {s: v for s, v in by_arm.get((comparison.task, comparison.than), {}).items() if v is not None},
        )
        comparisons.append(
            {
                "better": arm_key(comparison.better, comparison.task, multi),
                "than": arm_key(comparison.than, comparison.task, multi),
                "task": comparison.task,
                "metric": metric_of(study, tasks[comparison.task]),
                **diff,
                "paper": comparison.paper,
                "paper_note": comparison.paper_note,
            }
        )
    return {
        "schema": SCHEMA,
        "study": study.name,
        "guideline": study.guideline,
        "claim": study.claim,
        "setting": "quick" if options.quick else "full",
        "seeds": list(options.seeds),
        "task": {
            name: {
                "kind": task.kind,
                "data": task.data,
                "options": task.options,
                "metric": metric_of(study, task),
                "budget": task.budget(options.quick),
                "description": task.description,
            }
            for name, task in tasks.items()
        },
        "arms": arms,
        "comparisons": comparisons,
        "paper": study.paper,
        # the processes the runs trained with (a study rebuilt from finished runs by a command with another
        # process count still says how they ran); a list when its runs differ
        "processes": _run_processes(records, processes),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": options.command or " ".join(sys.argv),
        "cpu_seconds": sum(r.get("cpu_seconds", 0.0) for r in records),
        "wall_seconds": sum(r.get("wall_seconds", 0.0) for r in records),
    }


def _run_processes(records: list[dict], current: int) -> int | list[int]:
    counts = sorted({int(r.get("processes", current)) for r in records}) or [current]
    return counts[0] if len(counts) == 1 else counts


def _extra_summary(records: list[dict], task: str, arm: str) -> dict:
    """Mean over seeds of each numeric extra (area ratios, far-pixel accuracy, ...)."""
    extras = [r.get("extra", {}) for r in records if r["task"] == task and r["arm"] == arm]
    out: dict = {}
    for key in sorted({k for e in extras for k in e}):
        values = [e[key] for e in extras if key in e]
        if all(isinstance(v, (int, float)) and v is not None for v in values):
            out[key] = summarize(values)["mean"]
        elif all(isinstance(v, list) and v and all(isinstance(x, (int, float)) for x in v) for v in values):
            length = max(len(v) for v in values)  # curves (radial profiles): pointwise mean, padded with the end
            out[key] = np.mean([v + [v[-1]] * (length - len(v)) for v in values], axis=0).round(6).tolist()
        elif all(isinstance(v, dict) for v in values):
            inner = {k for v in values for k in v}
            out[key] = {
                k: summarize([v[k] for v in values if isinstance(v.get(k), (int, float))])["mean"]
                for k in sorted(inner)
            }
    return out


def _plot(study: Study, results: dict, records: list[dict], out: Path) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        _logger.warning("matplotlib is not installed: no plots (pip install matplotlib)")
        return
    from replknet.study.plots import plot_arms, plot_erf_profiles

    plot_arms(results, out / "arms.png")
    if study.analysis == "erf":
        plot_erf_profiles(records, out / "erf_profiles.png")
