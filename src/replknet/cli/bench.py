"""`replknet bench`: params, MACs and images/s of RepLKNet (or a run's model) next to timm peers (the paper's method)."""

from __future__ import annotations

import argparse

from replknet.cli import _common as common

# Mirrors replknet.deploy.bench.DEFAULT_MODELS (kept literal so that `replknet --help` does not import torch).
DEFAULT_MODELS = ("replknet_31b", "swin_base_patch4_window7_224", "convnext_base", "resnet101", "resnet152")
# The paper's settings on a GPU; on a CPU they would take hours, so a small batch and a time budget per entry.
GPU_DEFAULTS = dict(batch_size=64, warmup=50, iterations=30, budget=None, dtypes=("fp32", "bf16"))
CPU_DEFAULTS = dict(batch_size=8, warmup=1, iterations=1000, budget=10.0, dtypes=("fp32",))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_checkpoint(parser, what="measure this run's model at its input size instead of --models")
    parser.add_argument("--models", nargs="+", help=f"registered or timm names (default: {' '.join(DEFAULT_MODELS)})")
    parser.add_argument(
        "--forms",
        nargs="+",
        default=["train", "fused"],
        choices=("train", "fused", "deep"),
        help="RepLKNet forms: train, fused (official re-param), deep (every BN folded too)",
    )
    parser.add_argument(
        "--dtypes", nargs="+", choices=("fp32", "bf16", "fp16"), help="default: fp32 bf16 on GPU, fp32 on CPU"
    )
    parser.add_argument("--batch-size", type=common.positive_int, help="default: 64 on GPU (the paper's), 8 on CPU")
    common.add_image_size(parser, "square input resolution (default: the run's, else 224)", square_only=True)
    parser.add_argument(
        "--budget",
        type=common.positive_float,
        help="seconds of timed forwards per entry (default: 10 on CPU; on GPU a fixed --iterations)",
    )
    parser.add_argument(
        "--warmup", type=common.nonnegative_int, help="untimed forwards first (default: 50 on GPU, 1 on CPU)"
    )
    parser.add_argument(
        "--iterations",
        type=common.positive_int,
        help="timed forwards (default: 30 on GPU, the paper's; on CPU as many as fit in --budget)",
    )
    common.add_device(parser)
    common.add_threads(parser)
    common.add_memory_format(parser)
    parser.add_argument(
        "--baseline", default="swin_base_patch4_window7_224", help="model the throughput ratios are taken to"
    )
    common.add_json(parser)
    common.add_progress(parser)


def settings(args: argparse.Namespace, device_type: str) -> dict:
    """The measurement settings: what was given, the device's defaults for the rest."""
    defaults = GPU_DEFAULTS if device_type == "cuda" else CPU_DEFAULTS
    budget = args.budget if args.budget is not None else (None if args.iterations else defaults["budget"])
    return {
        "batch_size": args.batch_size or defaults["batch_size"],
        "warmup": args.warmup if args.warmup is not None else defaults["warmup"],
        "iterations": args.iterations or defaults["iterations"],
        "budget": budget,
        "dtypes": list(args.dtypes or defaults["dtypes"]),
    }


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from replknet.deploy.bench import bench_entries, benchmark, device_description, format_table
    from replknet.runtime import resolve_memory_format

    common.check_json_output(args.json)
    device = common.setup_torch(args)
    chosen = settings(args, device.type)
    models: list = list(args.models or DEFAULT_MODELS)
    image_size = args.image_size or 224
    if args.checkpoint is not None:
        from replknet.deploy import load_model

        if args.models:
            raise ValueError("give --checkpoint or --models, not both")
        model = load_model(args.checkpoint)
        models = [model]
        image_size = args.image_size or int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    memory_format = resolve_memory_format(args.memory_format, device)
    device_name = device_description(device)
    timing = (
        f"{chosen['warmup']} warm-up forwards, then {chosen['budget']:g} s of timed forwards per entry"
        if chosen["budget"] is not None
        else f"{chosen['warmup']} warm-up + {chosen['iterations']} timed forwards"
    )
    common.say(
        args,
        f"device {device} ({device_name}), batch {chosen['batch_size']}, {image_size}px, {memory_format}, {timing}, "
        f"torch {torch.__version__}",
    )
    total = bench_entries(models, args.forms, chosen["dtypes"])
    bar = tqdm(total=total, unit="entry", disable=args.no_progress, leave=False, dynamic_ncols=True)

    def on_start(model: str, form: str, dtype: str) -> None:
        bar.set_description(f"{model} {form} {dtype}")

    def on_result(result) -> None:
        bar.update(1)
        line = f"  {result.model} {result.form} {result.dtype}: {result.images_per_second:.2f} images/s"
        bar.write(line, file=None if args.json != "-" else __import__("sys").stderr)

    try:
        results = benchmark(
            models,
            args.forms,
            chosen["dtypes"],
            batch_size=chosen["batch_size"],
            image_size=image_size,
            warmup=chosen["warmup"],
            iterations=chosen["iterations"],
            device=str(device),
            channels_last=memory_format == "channels_last",
            on_result=on_result,
            budget=chosen["budget"],
            on_start=on_start,
        )
    finally:
        bar.close()
    common.say(args, format_table(results, args.baseline))
    payload = {
        "settings": {
            **chosen,
            "image_size": image_size,
            "device": str(device),
            "memory_format": memory_format,
            "threads": torch.get_num_threads(),
            "checkpoint": args.checkpoint,
        },
        "device_name": device_name,
        "torch": torch.__version__,
        "results": [r.to_dict() for r in results],
    }
    common.write_json(payload, args.json)
    if args.json not in (None, "-"):
        print(f"wrote {args.json}")
    return 0
