"""`replknet seg-train`: train RepLKNet-UperNet on the built-in synthetic data, ADE20K or Cityscapes."""

from __future__ import annotations

import argparse

from replknet.cli import _common as common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="synthetic", choices=["synthetic", "ade20k", "cityscapes"], help="data")
    parser.add_argument(
        "--data-root", help="ADE20K root (images/, annotations/) or Cityscapes root (leftImg8bit/, gtFine/)"
    )
    parser.add_argument(
        "--backbone", help="registered backbone model (default: replknet_tiny for synthetic, else replknet_31b)"
    )
    parser.add_argument(
        "--backbone-checkpoint", metavar="RUN|FILE", help="backbone weights: a classification run or any checkpoint"
    )
    parser.add_argument("--channels", type=common.positive_int, help="UPerHead width (paper: 512; synthetic demo: 64)")
    parser.add_argument(
        "--aux-channels", type=common.nonnegative_int, help="auxiliary FCNHead width (paper: 256; demo 32; 0: none)"
    )
    parser.add_argument("--drop-path-rate", type=common.fraction, help="backbone stochastic depth (paper: 0.3-0.5)")
    parser.add_argument("--norm-intermediate-features", action="store_true", help="BN on each stage output (XL)")
    parser.add_argument("--iterations", type=common.positive_int, help="training iterations (synthetic: 200)")
    parser.add_argument("--batch-size", type=common.positive_int, help="images per process (synthetic: 8, else 2)")
    parser.add_argument("--lr", type=common.positive_float, help="peak learning rate (paper: 2e-4; synthetic: 2e-3)")
    parser.add_argument("--weight-decay", type=common.nonnegative_float, default=0.05, help="AdamW weight decay")
    parser.add_argument(
        "--warmup-iters", type=common.nonnegative_int, help="linear warm-up iterations (paper: 400; synthetic: 20)"
    )
    parser.add_argument("--crop-size", type=common.positive_int, help="training crop (ADE20K 512, Cityscapes 769)")
    parser.add_argument(
        "--eval-interval", type=common.positive_int, help="iterations between evaluations (synthetic: 100)"
    )
    parser.add_argument("--eval-mode", default="whole", choices=["whole", "slide"], help="evaluation inference mode")
    parser.add_argument("--eval-crop", type=common.positive_int, help="sliding-window size")
    parser.add_argument("--eval-stride", type=common.positive_int, help="sliding-window stride")
    parser.add_argument(
        "--checkpoint-interval", type=common.positive_int, help="iterations between checkpoints (synthetic: 100)"
    )
    parser.add_argument(
        "--output", default="runs/seg", metavar="DIR", help="the run folder: weights, config.json, last.pth, metrics"
    )
    common.add_overwrite(parser, "a run (finished, or unfinished and not resumed) in --output")
    parser.add_argument("--resume", help="checkpoint to resume, or 'auto' (OUTPUT/last.pth if present)")
    parser.add_argument(
        "--stop-after",
        type=common.positive_int,
        help="end this run after N iterations (resume later with --resume auto)",
    )
    parser.add_argument("--amp", action="store_true", help="mixed precision (bf16 on CPU, fp16 + grad scaling on GPU)")
    common.add_memory_format(parser)
    parser.add_argument("--grad-checkpointing", action="store_true", help="recompute backbone blocks in backward")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, data and augmentation")
    parser.add_argument("--workers", type=common.nonnegative_int, default=0, help="data-loader worker processes")
    common.add_device(parser)
    common.add_threads(parser)
    parser.add_argument("--image-size", type=common.positive_int, default=96, help="synthetic image size")
    parser.add_argument("--train-samples", type=common.positive_int, help="synthetic training images (default: 512)")
    parser.add_argument("--val-samples", type=common.positive_int, help="synthetic validation images (default: 64)")
    parser.add_argument("--eval-at-start", action="store_true", help="also evaluate the untrained model")
    parser.add_argument(
        "--save-png", type=common.nonnegative_int, default=4, help="colour-coded predictions to write at the end"
    )
    common.add_progress(parser)


def run(args: argparse.Namespace) -> int:
    import torch

    from replknet.seg.engine import TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    config = TrainConfig(
        dataset=args.dataset,
        data_root=args.data_root,
        backbone=args.backbone,
        backbone_checkpoint=args.backbone_checkpoint,
        channels=args.channels,
        aux_channels=args.aux_channels,
        drop_path_rate=args.drop_path_rate,
        norm_intermediate_features=args.norm_intermediate_features,
        iterations=args.iterations,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_iters=args.warmup_iters,
        crop_size=args.crop_size,
        eval_every=args.eval_interval,
        eval_mode=args.eval_mode,
        eval_crop=args.eval_crop,
        eval_stride=args.eval_stride,
        save_every=args.checkpoint_interval,
        output=args.output,
        overwrite=args.overwrite,
        resume=args.resume,
        stop_after=args.stop_after,
        amp=args.amp,
        memory_format=args.memory_format,
        use_checkpoint=args.grad_checkpointing,
        seed=args.seed,
        num_workers=args.workers,
        device=args.device,
        image_size=args.image_size,
        train_samples=args.train_samples,
        val_samples=args.val_samples,
        eval_at_start=args.eval_at_start,
        save_png=args.save_png,
        progress=not args.no_progress,
    )
    result = train(config)
    if int(__import__("os").environ.get("RANK", 0)) != 0:
        return 0
    print(f"{'iteration':>9}  {'mIoU':>6}  {'mAcc':>6}  {'aAcc':>6}")
    for row in result["history"]:
        print(f"{row['iteration']:>9}  {100 * row['mIoU']:6.2f}  {100 * row['mAcc']:6.2f}  {100 * row['aAcc']:6.2f}")
    final = result["final"]
    if final is not None:
        print("per-class IoU: " + ", ".join(f"{name} {100 * value:.1f}" for name, value in final["IoU"].items()))
    print(f"trained {result['iterations']} iterations in {result['seconds']:.0f} s; run folder {args.output}")
    return 0
