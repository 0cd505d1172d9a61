"""`replknet seg-eval --checkpoint SEG_RUN`: mIoU of a seg-train run on its own validation data (its settings read
from the run), single-scale (whole or sliding window) or multi-scale + flip."""

from __future__ import annotations

import argparse

from replknet.cli import _common as common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_checkpoint(parser, required=True, what="a seg-train run folder (or its model.safetensors / last.pth)")
    parser.add_argument(
        "--dataset",
        choices=["synthetic", "longrange", "folder", "ade20k", "cityscapes"],
        help="default: the run's dataset (longrange: the run's task settings)",
    )
    parser.add_argument("--data-root", help="dataset root for folder/ade20k/cityscapes (default: the run's)")
    parser.add_argument("--split", default="val", choices=["train", "val"], help="split to evaluate")
    parser.add_argument(
        "--mode", choices=["whole", "slide"], help="single-scale inference mode (default: the run's evaluation mode)"
    )
    parser.add_argument(
        "--crop", type=common.positive_int, help="sliding-window size, e.g. 512; Cityscapes 769 (default: the run's)"
    )
    parser.add_argument(
        "--stride",
        type=common.positive_int,
        help="sliding-window stride, e.g. 341; Cityscapes 513 (default: the run's)",
    )
    parser.add_argument("--ms", action="store_true", help="multi-scale (0.5..1.75) + flip, the paper's 'ms'")
    parser.add_argument(
        "--ratios", type=common.positive_float, nargs="+", help="scales for --ms (default: 0.5 0.75 1.0 1.25 1.5 1.75)"
    )
    parser.add_argument("--no-flip", action="store_true", help="with --ms: no horizontal flip")
    parser.add_argument("--amp", action="store_true", help="mixed-precision inference")
    common.add_device(parser)
    common.add_threads(parser)
    parser.add_argument(
        "--image-size", type=common.positive_int, help="synthetic or longrange image size (default: the run's)"
    )
    parser.add_argument(
        "--val-samples", type=common.positive_int, help="synthetic or longrange images (default: the run's)"
    )
    parser.add_argument("--seed", type=int, help="synthetic or longrange dataset seed (default: the run's)")
    parser.add_argument(
        "--output",
        metavar="DIR",
        help="write metrics.json and colour-coded predictions here (default: nothing written)",
    )
    common.add_overwrite(parser, "an --output folder that already holds metrics.json")
    parser.add_argument(
        "--save-png", type=common.nonnegative_int, default=4, help="colour-coded predictions to write into --output"
    )
    common.add_json(parser, "the metrics")
    common.add_progress(parser)


def _setting(value, training: dict, key: str, default):
    if value is not None:
        return value
    saved = training.get(key)
    return saved if saved is not None else default


def run(args: argparse.Namespace) -> int:
    import json
    import math

    from replknet.checkpoint import atomic_write_text
    from replknet.outputs import check_output_dir
    from replknet.runs import build_segmentor, read_run
    from replknet.seg.data import build_dataset, dataset_spec, palette
    from replknet.seg.engine import EvalConfig, evaluate
    from replknet.seg.inference import PAPER_MS_RATIOS

    run_info = read_run(args.checkpoint)
    if run_info is None or run_info.task != "segmentation":
        raise ValueError(
            f"{args.checkpoint} is not a seg-train run (a folder with config.json of task 'segmentation', or last.pth)"
        )
    training = run_info.training or {}
    dataset_name = _setting(args.dataset, training, "dataset", "synthetic")
    own_data = dataset_name == training.get("dataset", "synthetic")
    if not own_data:
        training = {}  # another dataset: none of the run's data settings apply
    mode = _setting(args.mode, training, "eval_mode", "whole")
    crop = _setting(args.crop, training, "eval_crop", None)
    stride = _setting(args.stride, training, "eval_stride", None)
    if mode == "slide" and not (crop and stride):
        raise ValueError("--mode slide needs --crop and --stride")
    output = None
    if args.output is not None:
        output = check_output_dir(
            args.output,
            overwrite=args.overwrite,
            finished=lambda folder: (folder / "metrics.json").is_file(),
            what="--output",
        )
    common.check_json_output(args.json)
    device = common.setup_torch(args)
    model = build_segmentor(run_info).to(device)
    data_root = _setting(args.data_root, training, "data_root", None)
    spec = dataset_spec(dataset_name, data_root)
    if model.num_classes != spec.num_classes:
        raise ValueError(
            f"{args.checkpoint} predicts {model.num_classes} classes; {dataset_name} has {spec.num_classes}"
        )
    dataset = build_dataset(
        dataset_name,
        args.split,
        data_root,
        train=False,
        seed=_setting(args.seed, training, "seed", 0),
        num_samples=_setting(args.val_samples, training, "val_samples", None),
        image_size=_setting(args.image_size, training, "image_size", 96),
        options=training.get("dataset_options") if dataset_name == "longrange" else None,
    )
    batch = training.get("batch_size", 1) if dataset_name == "synthetic" else 1
    eval_config = EvalConfig(
        mode=mode,
        crop_size=crop,
        stride=stride,
        multi_scale=args.ms,
        ratios=tuple(args.ratios) if args.ratios else PAPER_MS_RATIOS,
        flip=not args.no_flip,
        amp=args.amp,
        batch_size=batch or 1,
    )
    class_names = list(getattr(dataset, "class_names", None) or [str(i) for i in range(spec.num_classes)])
    out_dir = output.create() if output is not None else None
    metrics = evaluate(
        model,
        dataset,
        eval_config,
        device,
        class_names,
        png_dir=out_dir / "predictions" if out_dir is not None else None,
        num_png=args.save_png if out_dir is not None else 0,
        colors=palette(spec.num_classes, dataset_name),
        progress=not args.no_progress,
    )
    recorded = _recorded_miou(run_info) if own_data and args.split == "val" else None
    clean = json.loads(json.dumps(metrics, default=str).replace("NaN", "null"))
    if recorded is not None:
        clean["recorded_mIoU"] = recorded
    if out_dir is not None:
        atomic_write_text(out_dir / "metrics.json", json.dumps(clean, indent=1))
    common.write_json(clean, args.json)
    if args.json == "-":
        return 0
    test = "ms+flip" if args.ms and not args.no_flip else ("ms" if args.ms else mode)
    line = (
        f"{dataset_name} {args.split} ({len(dataset)} images, {test}): mIoU {100 * metrics['mIoU']:.2f}  "
        f"mAcc {100 * metrics['mAcc']:.2f}  aAcc {100 * metrics['aAcc']:.2f}"
    )
    if recorded is not None:
        line += f"  (the run recorded mIoU {100 * recorded:.2f})"
    print(line)
    for name, value in metrics["IoU"].items():
        shown = "n/a" if math.isnan(value) else f"{100 * value:.2f}"
        print(f"  {name:<20} IoU {shown}")
    if out_dir is not None:
        print(f"wrote {out_dir / 'metrics.json'}" + (f" and {out_dir / 'predictions'}" if args.save_png else ""))
    return 0


def _recorded_miou(run_info) -> float | None:
    summary = run_info.summary() or {}
    final = summary.get("final") or {}
    value = final.get("mIoU")
    return float(value) if value is not None else None
