"""`replknet eval`: top-1/top-5 of a checkpoint (ours or official) on an ImageFolder split or the built-in shapes."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="weights file (this library's safetensors, official .pth, mmpretrain)")
    parser.add_argument(
        "--model",
        help="registered model name, optionally with a config tag (e.g. replknet_31b.in1k_384); default: read from "
        "config.json beside the checkpoint",
    )
    parser.add_argument("--data", default="synthetic", help="ImageFolder root (holding SPLIT/) or 'synthetic'")
    parser.add_argument("--split", default="val", help="split folder under --data (default: val)")
    parser.add_argument("--image-size", type=int, help="default: the model config's size (64 for synthetic)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--device", choices=["cpu", "cuda"])
    parser.add_argument("--amp", choices=["bf16", "fp16"])
    parser.add_argument("--shape-bias", action="store_true", help="also the synthetic cue-conflict shape bias")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.add_argument("--no-progress", action="store_true")


def _from_run_config(checkpoint: str | None) -> dict:
    """model/image_size from the config.json a training run wrote beside its checkpoints."""
    import json
    from pathlib import Path

    if checkpoint is None:
        return {}
    config_path = Path(checkpoint).parent / "config.json"
    if not config_path.is_file():
        return {}
    values = json.loads(config_path.read_text())
    return {"model": values.get("model"), "image_size": values.get("image_size")}


def run(args: argparse.Namespace) -> int:
    import json

    from replknet.train import evaluate_checkpoint

    saved = _from_run_config(args.checkpoint)
    model = args.model or saved.get("model")
    if model is None:
        raise ValueError("give --model (no config.json beside the checkpoint names it)")
    image_size = args.image_size or (saved.get("image_size") if args.data == "synthetic" else None)
    metrics = evaluate_checkpoint(
        model,
        args.checkpoint,
        args.data,
        split=args.split,
        image_size=image_size,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        amp=args.amp,
        progress=not args.no_progress,
    )
    if args.shape_bias:
        import torch

        import replknet
        from replknet.train import synthetic_shape_bias

        net = replknet.create_model(model, checkpoint_path=args.checkpoint, num_classes=10).eval()
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        metrics["shape_bias"] = synthetic_shape_bias(net.to(device), metrics["image_size"], device=device)
    if args.json:
        print(json.dumps(metrics, indent=2))
        return 0
    print(f"model       {model}")
    print(f"checkpoint  {args.checkpoint}")
    print(f"data        {args.data}/{args.split} ({metrics['images']} images at {metrics['image_size']}px)")
    print(f"top-1       {metrics['top1']:.2f}%")
    print(f"top-5       {metrics['top5']:.2f}%")
    print(f"loss        {metrics['loss']:.4f}")
    if "shape_bias" in metrics:
        bias = metrics["shape_bias"]
        print(f"shape bias  {bias['shape_bias']:.3f} (shape {bias['shape_hits']}, texture {bias['texture_hits']})")
    return 0
