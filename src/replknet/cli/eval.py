"""`replknet eval --checkpoint RUN`: top-1/top-5 of a run (on its own validation data) or of any checkpoint."""

from __future__ import annotations

import argparse

from replknet.cli import _common as common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_checkpoint(parser, what="a run folder evaluates on its own validation data and needs nothing else")
    common.add_model(parser, what="with no --checkpoint: random weights")
    parser.add_argument(
        "--data", help="ImageFolder root (holding SPLIT/<class>/...) or 'synthetic' (default: the run's data)"
    )
    parser.add_argument("--split", help="split folder under --data (default: the run's validation split, else val)")
    common.add_image_size(parser, "evaluation resolution (default: the run's, else the model's)", square_only=True)
    parser.add_argument(
        "--batch-size", type=common.positive_int, help="images per forward (default: the run's, else 64)"
    )
    parser.add_argument("--workers", type=common.nonnegative_int, default=4, help="DataLoader worker processes")
    common.add_device(parser)
    common.add_threads(parser)
    parser.add_argument("--amp", choices=["bf16", "fp16"], help="autocast precision (default: the run's, else fp32)")
    common.add_memory_format(parser, default=None, what="default: as the run validated, else contiguous")
    parser.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="leave out image files that cannot be read (listed), instead of stopping at the first",
    )
    parser.add_argument("--shape-bias", action="store_true", help="also the built-in cue-conflict shape bias")
    common.add_json(parser, "the metrics")
    common.add_progress(parser)


def run(args: argparse.Namespace) -> int:
    from replknet.train import evaluate_checkpoint

    if args.checkpoint is None and args.model is None:
        raise ValueError("give --checkpoint RUN (a run folder needs nothing else), or --model NAME")
    common.check_json_output(args.json)
    device = common.setup_torch(args)
    channels_last = None
    if args.memory_format is not None:
        from replknet.runtime import resolve_memory_format

        channels_last = resolve_memory_format(args.memory_format, device) == "channels_last"
    metrics = evaluate_checkpoint(
        args.model,
        args.checkpoint,
        args.data,
        split=args.split,
        image_size=args.image_size,
        batch_size=args.batch_size,
        workers=args.workers,
        device=str(device),
        amp=args.amp,
        channels_last=channels_last,
        progress=not args.no_progress,
        skip_bad_images=args.skip_bad_images,
    )
    recorded = _recorded_top1(args.checkpoint, metrics)
    if recorded is not None:
        metrics["recorded_top1"] = recorded
    if args.shape_bias:
        from replknet.deploy import load_model
        from replknet.train import synthetic_shape_bias

        if args.checkpoint is not None:
            net = load_model(args.checkpoint, args.model)
        else:
            import replknet

            net = replknet.create_model(args.model, num_classes=10)
        if net.num_classes != 10:
            raise ValueError(f"--shape-bias needs a model of the 10 built-in shapes; this one has {net.num_classes}")
        metrics["shape_bias"] = synthetic_shape_bias(net.to(device).eval(), metrics["image_size"], device=device)
    common.write_json(metrics, args.json)
    if args.json == "-":
        return 0
    print(f"model       {metrics['model']}")
    print(f"checkpoint  {args.checkpoint}")
    print(f"data        {metrics['data']}/{metrics['split']} ({metrics['images']} images at {metrics['image_size']}px)")
    print(
        f"top-1       {metrics['top1']:.2f}%"
        + (f"  (the run recorded {recorded:.2f}%)" if recorded is not None else "")
    )
    print(f"top-5       {metrics['top5']:.2f}%")
    print(f"loss        {metrics['loss']:.4f}")
    for skipped in metrics.get("skipped", []):
        print(f"skipped     {skipped['path']}: {skipped['error']}")
    if "shape_bias" in metrics:
        bias = metrics["shape_bias"]
        print(f"shape bias  {bias['shape_bias']:.3f} (shape {bias['shape_hits']}, texture {bias['texture_hits']})")
    return 0


def _recorded_top1(checkpoint: str | None, metrics: dict) -> float | None:
    """The top-1 the run's summary.json recorded for these weights on the same data, if any."""
    from pathlib import Path

    from replknet.runs import read_run

    if checkpoint is None:
        return None
    run = read_run(checkpoint)
    if run is None or run.task != "classification" or run.training is None:
        return None
    summary = run.summary()
    training = run.training
    if not summary or str(metrics["data"]) != str(training.get("data")):
        return None
    if metrics["split"] != training.get("val_split", "val"):
        return None
    key = {"model_fused.safetensors": "val_fused", "model_ema.safetensors": "val_ema"}.get(
        Path(run.weights).name, "val"
    )
    values = summary.get(key) or {}
    return values.get("top1")
