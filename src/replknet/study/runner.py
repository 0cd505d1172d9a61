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
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from replknet.study.definitions import Arm, Study, Task, get_study, with_tasks
from replknet.study.results import (
    SCHEMA,
    arm_key,
    paired_difference,
    summarize,
    write_json_atomic,
    write_results,
)

__all__ = ["StudyOptions", "run_study", "resolve_tasks", "RUN_RECORD", "FAR_DISTANCE", "ERF_SIZE"]

_logger = logging.getLogger(__name__)

RUN_RECORD = "study_run.json"
# Segmentation: pixels at least this far (Chebyshev, px) from their own cue. A model whose receptive field is at
# most 2 * FAR_DISTANCE + 1 px wide is provably at chance on them (replknet.data.longrange_seg).
FAR_DISTANCE = 16
# ERF: the 64 px task images are padded with their background to 288 px. At 96 px every arm's map covered the
# whole input (the tiny bodies' receptive fields are wider than that), which says nothing; 288 = 32 x 9 also gives
# the stride-32 map a centre pixel whose receptive field is centred on the image's centre, as the paper's 1024 does
# for its 32 x 32 map only approximately.
ERF_SIZE = 288
ERF_IMAGES = {True: 16, False: 50}  # quick, full (the paper averages 50 images)


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


# ---------------------------------------------------------------------------------------------- distributed
def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _init_distributed(device: str | None) -> bool:
    """Set up the process group once for the whole study under torchrun; True if this call created it."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return True


def _agree(flag: bool) -> bool:
    """Rank 0's ``flag`` on every process (so that all take the same branch)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == "nccl":
        value = value.cuda()
    dist.broadcast(value, src=0)
    return bool(value.item() > 0)


def _split_batch(batch: int, world: int) -> int:
    if batch % world:
        raise ValueError(f"the global batch {batch} does not split over {world} processes")
    return batch // world


def metric_of(study: Study, task: Task) -> str:
    """What the study reports per arm on ``task``: the task's metric, or what the analysis after training measures."""
    return "erf_area_ratio_t50" if study.analysis == "erf" else task.metric


# ---------------------------------------------------------------------------------------------- one run each
def _classification_config(study: Study, task: Task, arm: Arm, seed: int, run_dir: Path, options: StudyOptions):
    from replknet.train import get_preset
    from replknet.train.config import BUILTIN_DATA

    budget = task.budget(options.quick)
    _, world = _world()
    builtin = task.data in BUILTIN_DATA
    kwargs = dict(arm.kwargs)
    if "img_size" in kwargs:  # a ViT is built for one input size: the task's
        kwargs["img_size"] = budget["image_size"]
    return get_preset(
        "demo",
        model=arm.model,
        model_kwargs=kwargs,
        data=task.data,
        data_options=dict(task.options) if builtin else {},
        image_size=budget["image_size"],
        synthetic_train_size=budget.get("train_size"),
        synthetic_val_size=budget.get("val_size"),
        epochs=budget["epochs"],
        warmup_epochs=budget.get("warmup_epochs", 0.5),
        batch_size=_split_batch(budget["batch_size"], world),
        recipe_batch=budget["batch_size"],
        lr=budget["lr"],
        seed=seed,
        output=str(run_dir),
        # the fused model's shape bias is what the shape-bias study reports; elsewhere fusion is not needed
        fuse=study.analysis == "shape_bias",
        workers=0 if builtin else 2,
        log_every=50,
        # memory_format "auto": channels_last on a CPU, where the MobileNetV2 arms train ~1.6x and the tiny
        # RepLKNets ~1.3x faster than in NCHW
    )


def _finished_classification(config, run_dir: Path):
    """The result of a training that finished before its study record was written (read back, not redone)."""
    import replknet
    from replknet.train.engine import MODEL_NAME, SUMMARY_NAME, TrainResult

    summary = json.loads((run_dir / SUMMARY_NAME).read_text())
    num_classes = {"synthetic": 10, "pathfinder": 2}.get(config.data)
    model = replknet.create_model(
        config.model, checkpoint_path=run_dir / MODEL_NAME, num_classes=num_classes, **config.model_kwargs
    )
    return TrainResult(
        config=config,
        output_dir=run_dir,
        epochs_completed=summary["epochs_completed"],
        num_updates=summary["num_updates"],
        val=summary.get("val") or {},
        shape_bias=summary.get("shape_bias"),
        params=summary.get("params", 0),
        history=summary.get("history", []),
        model=model,
    )


def _train_classification(study, task, arm, seed, run_dir, options) -> tuple[dict, object]:
    from replknet.train import train
    from replknet.train.engine import CHECKPOINT_NAME, is_finished_run

    config = _classification_config(study, task, arm, seed, run_dir, options)
    if is_finished_run(run_dir):
        result = _finished_classification(config, run_dir)
    else:
        resume = run_dir if (run_dir / CHECKPOINT_NAME).is_file() else None
        result = train(config, resume=resume, progress=options.progress, device=options.device)
    val = dict(result.val)
    if not val and result.history:  # resumed after the last epoch: its validation is in the history
        last = result.history[-1]
        val = {k[len("val_") :]: v for k, v in last.items() if k.startswith("val_")}
    extra = {"top5": val.get("top5"), "val_loss": val.get("loss"), "params": result.params}
    return {"value": val.get("top1"), "extra": extra}, result


def _shape_bias_from_folder(model, folder: str, image_size: int, device) -> dict:
    """Shape bias on ``folder/cue_conflict`` (its labels.json names each file's shape and texture class)."""
    from PIL import Image

    from replknet.analysis.shape_bias import shape_bias_from_decisions
    from replknet.train.data import eval_transform
    from replknet.train.evaluate import _model_mean_std

    root = Path(folder) / "cue_conflict"
    labels = json.loads((root / "labels.json").read_text())
    classes = sorted(p.name for p in (Path(folder) / "train").iterdir() if p.is_dir())
    mean, std = _model_mean_std(model)
    transform = eval_transform(image_size, mean, std)
    model.eval()
    triples = []
    with torch.no_grad():
        for relative, entry in sorted(labels.items()):
            with Image.open(root / relative) as image:
                x = transform(image.convert("RGB")).unsqueeze(0).to(device)
            decision = classes[int(model(x).argmax(dim=1))]
            triples.append((entry["shape"], entry["texture"], decision))
    return shape_bias_from_decisions(triples, categories=classes).to_dict(with_records=False)


def _erf_inputs(task: Task, options: StudyOptions, model, count: int) -> list[torch.Tensor]:
    """The first ``count`` validation images, normalised as in training, padded to ``ERF_SIZE`` (background)."""
    from replknet.train.config import BUILTIN_DATA
    from replknet.train.evaluate import _model_mean_std

    budget = task.budget(options.quick)
    if task.data in BUILTIN_DATA:
        from replknet.train.config import TrainConfig
        from replknet.train.engine import builtin_datasets

        config = TrainConfig(
            data=task.data,
            data_options=dict(task.options),
            image_size=budget["image_size"],
            synthetic_train_size=budget["train_size"],
            synthetic_val_size=budget["val_size"],
        )
        _, val_set = builtin_datasets(config)
        images = val_set.images[:count].permute(0, 3, 1, 2).float() / 255  # (N, 3, H, W)
    else:
        from replknet.train.data import build_image_folder

        size = budget["image_size"]
        from torchvision import transforms

        folder = build_image_folder(task.data, "val", transforms.Compose([transforms.Resize((size, size)),
                                                                         transforms.ToTensor()]))  # fmt: skip
        images = torch.stack([folder[i][0] for i in range(min(count, len(folder)))])
    mean, std = _model_mean_std(model)
    side = max(ERF_SIZE, images.shape[-1])
    pad = side - images.shape[-1]
    # Pad with the images' own border colour (the black background of Pathfinder), before normalising.
    background = images[:, :, :1, :1].mean(dim=0, keepdim=True)
    padded = background.expand(len(images), 3, side, side).clone()
    padded[:, :, pad // 2 : pad // 2 + images.shape[-2], pad // 2 : pad // 2 + images.shape[-1]] = images
    normalised = (padded - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return list(normalised)


def _erf_analysis(task, options, model, run_dir: Path) -> tuple[float, dict]:
    from replknet.analysis.erf import compute_erf, radial_profile

    images = _erf_inputs(task, options, model, ERF_IMAGES[options.quick])
    result = compute_erf(model.cpu(), images)
    np.save(run_dir / "erf.npy", result.contribution.astype(np.float32))
    ratios = result.area_ratios()
    profile = radial_profile(result.contribution)
    extra = {
        "area_ratio_percent": {f"t{round(100 * r.threshold)}": 100 * r.ratio for r in ratios},
        "side": {f"t{round(100 * r.threshold)}": r.side for r in ratios},
        "radius_holding": {f"{p}%": profile.radius_at(p / 100) for p in (50, 90, 99)},
        "radial_profile": profile.cumulative.round(6).tolist(),
        "erf_size": int(result.contribution.shape[0]),
        "erf_images": result.num_images,
    }
    return 100 * ratios[2].ratio, extra  # t = 50%


def _run_classification_arm(study, task, arm, seed, run_dir, options) -> dict:
    record, result = _train_classification(study, task, arm, seed, run_dir, options)
    rank, _ = _world()
    if study.analysis == "shape_bias":
        if task.data == "synthetic":
            bias = result.shape_bias
        else:
            import replknet

            fused = replknet.reparameterize(result.model.eval())
            bias = _shape_bias_from_folder(fused, task.data, task.budget(options.quick)["image_size"], "cpu")
        record["extra"]["top1"] = record["value"]
        record["extra"]["shape_bias"] = bias
        record["value"] = None if bias is None else bias.get("shape_bias")
    elif study.analysis == "erf" and rank == 0:
        record["extra"]["top1"] = record["value"]
        record["value"], erf = _erf_analysis(task, options, result.model.eval(), run_dir)
        record["extra"].update(erf)
    return record


def _run_segmentation_arm(study, task, arm, seed, run_dir, options) -> dict:
    from replknet.seg.engine import CHECKPOINT_NAME, EvalConfig, evaluate, is_finished_run, load_segmentor
    from replknet.seg.engine import TrainConfig as SegConfig
    from replknet.seg.engine import train as seg_train

    budget = task.budget(options.quick)
    _, world = _world()
    builtin = task.data == "longrange"
    iterations = budget["iterations"]
    config = SegConfig(
        dataset="longrange" if builtin else "folder",
        data_root=None if builtin else task.data,
        dataset_options=dict(task.options) if builtin else {},
        backbone=arm.model,
        backbone_kwargs=dict(arm.kwargs),
        channels=budget.get("channels", 64),
        aux_channels=budget.get("aux_channels", 32),
        iterations=iterations,
        batch_size=_split_batch(budget["batch_size"], world),
        lr=budget["lr"],
        warmup_iters=budget.get("warmup_iters", max(1, iterations // 20)),
        eval_every=iterations,
        save_every=max(1, iterations // 4),
        output=str(run_dir),
        resume="auto",
        seed=seed,
        device=options.device,
        image_size=budget["image_size"],
        train_samples=budget.get("train_size"),
        val_samples=budget.get("val_size"),
        save_png=2,
        progress=options.progress,
    )
    if is_finished_run(run_dir):  # finished before its study record was written: read back, not redone
        final = None
    else:
        final = seg_train(config).get("final")
    from replknet.seg.data import build_dataset

    rank, _ = _world()
    extra: dict = {}
    val_set = build_dataset(
        config.dataset, "val", config.data_root, seed=seed, num_samples=config.val_samples,
        image_size=config.image_size, options=config.dataset_options,
    )  # fmt: skip
    model = load_segmentor(run_dir / CHECKPOINT_NAME)
    if final is None:  # finished before: evaluate again (every process: the confusion matrices are summed)
        final = evaluate(model, val_set, EvalConfig(batch_size=config.batch_size))
    if rank == 0:
        if hasattr(val_set, "cue_distance"):
            extra.update(_far_pixel_accuracy(model, val_set))
        extra.update({"macc": 100 * final["mAcc"], "aacc": 100 * final["aAcc"]})
    value = None if final is None else 100 * final["mIoU"]
    return {"value": value, "extra": extra}


@torch.no_grad()
def _far_pixel_accuracy(model, val_set) -> dict:
    """Pixel accuracy where the pixel's own cue is at least ``FAR_DISTANCE`` px away, and the local bound there."""
    model.eval()
    far_hits = far_count = near_hits = near_count = 0
    for index in range(len(val_set)):
        image, target = val_set[index]
        prediction = model(image.unsqueeze(0)).argmax(dim=1)[0]
        far = torch.from_numpy(val_set.cue_distance[index] >= FAR_DISTANCE)
        correct = prediction == target
        far_hits += int(correct[far].sum())
        far_count += int(far.sum())
        near_hits += int(correct[~far].sum())
        near_count += int((~far).sum())
    classes = len(val_set.class_names)
    return {
        "far_pixel_accuracy": 100 * far_hits / max(far_count, 1),
        "near_pixel_accuracy": 100 * near_hits / max(near_count, 1),
        "far_pixel_share": 100 * far_count / max(far_count + near_count, 1),
        "far_chance": 100 / classes,
        "far_distance_px": FAR_DISTANCE,
    }


def _run_timing_arm(study, task, arm, seed, run_dir, options) -> dict:
    import replknet
    from replknet.study.efficiency import depthwise_share

    budget = task.budget(options.quick)
    torch.manual_seed(0)
    model = replknet.reparameterize(replknet.create_model(arm.model, **arm.kwargs).eval())
    measured = depthwise_share(
        model, budget["image_size"], budget["batch_size"], arm.settings.get("impl", "auto"), budget.get("rounds", 2)
    )
    extra = {
        "total_ms": 1000 * measured.total_seconds,
        "depthwise_ms": 1000 * measured.depthwise_seconds,
        "images_per_second": measured.images_per_second,
        "depthwise_layers": measured.depthwise_layers,
        "threads": torch.get_num_threads(),
    }
    return {"value": measured.share, "extra": extra}


_RUNNERS: dict[str, Callable] = {
    "classification": _run_classification_arm,
    "segmentation": _run_segmentation_arm,
    "timing": _run_timing_arm,
}


# ---------------------------------------------------------------------------------------------- the study
def _run_one(study: Study, task: Task, arm: Arm, seed: int, run_dir: Path, options: StudyOptions) -> dict:
    rank, world = _world()
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        has_state = any((run_dir / name).is_file() for name in ("checkpoint.pt", "last.pth", "summary.json"))
        if not has_state and task.kind != "timing":
            # Nothing resumable: leftovers of a run killed before its first checkpoint would only confuse.
            for child in run_dir.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    wall, cpu = time.perf_counter(), time.process_time()
    record = _RUNNERS[task.kind](study, task, arm, seed, run_dir, options)
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
        processes=world,
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
    owns_group = _init_distributed(options.device)
    rank, world = _world()
    log = log or (lambda message: None)
    records: list[dict] = []
    try:
        total = sum(arm.runs_on(t) for t in tasks for arm in study.arms) * len(options.seeds)
        count = 0
        for seed in options.seeds:
            for task in tasks.values():
                for arm in study.arms:
                    if not arm.runs_on(task.name):
                        continue
                    count += 1
                    run_dir = out / "runs" / task.name / arm.label / f"seed{seed}"
                    path = run_dir / RUN_RECORD
                    done = _agree(rank == 0 and path.is_file())
                    if done:
                        if rank == 0:
                            records.append(json.loads(path.read_text()))
                            log(f"[{count}/{total}] {task.name} {arm.label} seed {seed}: done before, kept")
                        continue
                    if rank == 0:
                        log(f"[{count}/{total}] {task.name} {arm.label} seed {seed}: running ({world} process(es))")
                    record = _run_one(study, task, arm, seed, run_dir, options)
                    if rank == 0:
                        write_json_atomic(path, record)
                        records.append(record)
                        log(
                            f"[{count}/{total}] {task.name} {arm.label} seed {seed}: {metric_of(study, task)} "
                            f"{_fmt(record['value'])} ({record['wall_seconds']:.0f} s)"
                        )
        results = build_results(study, tasks, records, options, world)
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


def build_results(study: Study, tasks: dict[str, Task], records: list[dict], options: StudyOptions, world: int) -> dict:
    """The results dict (schema in ``replknet.study.results``) from the arm-seed records."""
    multi = len(tasks) > 1
    by_arm: dict[tuple[str, str], dict[int, float]] = {}
    for record in records:
        by_arm.setdefault((record["task"], record["arm"]), {})[record["seed"]] = record["value"]
    arms = {}
    for task in tasks.values():
        budget = task.budget(options.quick)
        for arm in study.arms:
            if not arm.runs_on(task.name):
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
        if comparison.task not in tasks:
            continue
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
        "processes": world,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": options.command or " ".join(sys.argv),
        "cpu_seconds": sum(r.get("cpu_seconds", 0.0) for r in records),
        "wall_seconds": sum(r.get("wall_seconds", 0.0) for r in records),
    }


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
