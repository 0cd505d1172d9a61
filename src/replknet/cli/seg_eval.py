"""`replknet seg-eval`: mIoU of a seg-train checkpoint, single-scale (whole or sliding window) or multi-scale + flip."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a seg-train checkpoint (last.pth)")
    parser.add_argument("--dataset", default="synthetic", choices=["synthetic", "ade20k", "cityscapes"])
    parser.add_argument("--data-root", help="dataset root for ade20k/cityscapes")
    parser.add_argument("--split", default="val", choices=["train", "val"])
    parser.add_argument("--mode", default="whole", choices=["whole", "slide"], help="single-scale inference mode")
    parser.add_argument("--crop", type=int, help="sliding-window size (e.g. 512; Cityscapes 769)")
    parser.add_argument("--stride", type=int, help="sliding-window stride (e.g. 341; Cityscapes 513)")
    parser.add_argument("--ms", action="store_true", help="multi-scale (0.5..1.75) + flip, the paper's 'ms'")
    parser.add_argument("--ratios", type=float, nargs="+", help="scales for --ms (default 0.5 0.75 1.0 1.25 1.5 1.75)")
    parser.add_argument("--no-flip", action="store_true", help="with --ms: no horizontal flip")
    parser.add_argument("--amp", action="store_true", help="mixed-precision inference")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--image-size", type=int, default=96, help="synthetic image size")
    parser.add_argument("--val-samples", type=int, help="synthetic images (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic dataset seed")
    parser.add_argument("--save-png", type=int, default=4, help="colour-coded predictions to write")
    parser.add_argument("--output-dir", default="runs/seg-eval", help="where predictions/*.png and metrics.json go")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")


def run(args: argparse.Namespace) -> int:
    import json
    import math
    from pathlib import Path

    import torch

    from replknet.seg.data import DATASET_SPECS, build_dataset, palette
    from replknet.seg.engine import EvalConfig, evaluate, load_segmentor
    from replknet.seg.inference import PAPER_MS_RATIOS

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.mode == "slide" and not (args.crop and args.stride):
        raise ValueError("--mode slide needs --crop and --stride")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))  # fmt: skip
    model = load_segmentor(args.checkpoint, device)
    spec = DATASET_SPECS[args.dataset]
    if model.num_classes != spec.num_classes:
        raise ValueError(
            f"{args.checkpoint} predicts {model.num_classes} classes; {args.dataset} has {spec.num_classes}"
        )
    dataset = build_dataset(
        args.dataset, args.split, args.data_root, train=False, seed=args.seed, num_samples=args.val_samples,
        image_size=args.image_size,
    )  # fmt: skip
    eval_config = EvalConfig(
        mode=args.mode, crop_size=args.crop, stride=args.stride, multi_scale=args.ms,
        ratios=tuple(args.ratios) if args.ratios else PAPER_MS_RATIOS, flip=not args.no_flip, amp=args.amp,
    )  # fmt: skip
    out_dir = Path(args.output_dir)
    class_names = list(getattr(dataset, "class_names", None) or [str(i) for i in range(spec.num_classes)])
    metrics = evaluate(
        model, dataset, eval_config, device, class_names, png_dir=out_dir / "predictions", num_png=args.save_png,
        colors=palette(spec.num_classes, args.dataset), progress=True,
    )  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    clean = json.loads(json.dumps(metrics, default=str).replace("NaN", "null"))
    (out_dir / "metrics.json").write_text(json.dumps(clean, indent=1))
    if args.json:
        print(json.dumps(clean, indent=1))
        return 0
    test = "ms+flip" if args.ms and not args.no_flip else ("ms" if args.ms else args.mode)
    print(f"{args.dataset} {args.split} ({len(dataset)} images, {test}): mIoU {100 * metrics['mIoU']:.2f}  "
          f"mAcc {100 * metrics['mAcc']:.2f}  aAcc {100 * metrics['aAcc']:.2f}")  # fmt: skip
    for name, value in metrics["IoU"].items():
        shown = "n/a" if math.isnan(value) else f"{100 * value:.2f}"
        print(f"  {name:<20} IoU {shown}")
    if args.save_png:
        print(f"predictions: {out_dir / 'predictions'}")
    return 0
