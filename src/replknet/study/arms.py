"""One arm-seed of a study: train it with the library's engine for its task, then measure what the study reports.

Classification arms train with ``replknet.train`` (then, for the ERF and shape-bias studies, the trained model is
analysed), segmentation arms with ``replknet.seg`` (plus the far-pixel accuracy on the long-range task), timing arms
time a forward pass (``replknet.study.efficiency``). Each returns ``{"value": metric, "extra": {...}}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from replknet.study.definitions import Arm, Study, Task
from replknet.study.distributed import split_batch, world

__all__ = ["FAR_DISTANCE", "ERF_SIZE", "ERF_IMAGES", "RUNNERS", "metric_of"]

# Segmentation: pixels at least this far (Chebyshev, px) from their own cue. A model whose receptive field is at
# most 2 * FAR_DISTANCE - 1 px wide sees none of their cue and is provably at chance on them (longrange_seg).
FAR_DISTANCE = 16
# ERF: the 64 px task images are padded with their background to 288 px. At 96 px every arm's map covered the
# whole input (the tiny bodies' receptive fields are wider than that), which says nothing; 288 = 32 x 9 also gives
# the stride-32 map a centre pixel whose receptive field is centred on the image's centre, as the paper's 1024 does
# for its 32 x 32 map only approximately.
ERF_SIZE = 288
ERF_IMAGES = {True: 16, False: 50}  # quick, full (the paper averages 50 images)


def metric_of(study: Study, task: Task) -> str:
    """What the study reports per arm on ``task``: the task's metric, or what the analysis after training measures."""
    return "erf_area_ratio_t50" if study.analysis == "erf" else task.metric


def _classification_config(study: Study, task: Task, arm: Arm, seed: int, run_dir: Path, options):
    from replknet.train import get_preset
    from replknet.train.config import BUILTIN_DATA

    budget = task.budget(options.quick)
    _, processes = world()
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
        batch_size=split_batch(budget["batch_size"], processes),
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


def _erf_inputs(task: Task, options, model, count: int) -> list[torch.Tensor]:
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
    rank, _ = world()
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
    _, processes = world()
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
        batch_size=split_batch(budget["batch_size"], processes),
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

    rank, _ = world()
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


RUNNERS: dict[str, Callable] = {
    "classification": _run_classification_arm,
    "segmentation": _run_segmentation_arm,
    "timing": _run_timing_arm,
}
