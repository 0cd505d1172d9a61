"""Throughput of a few models measured in alternation, for noisy shared machines.

`replknet bench` measures one model after another; when other jobs share the machine, their load changes between
models and the ratios drift. This script builds every model first, then runs rounds in which each model is
timed once (Swin's method within a round: warm-up forwards, then timed forwards), and reports the median over
rounds and the ratio to the baseline.

    python benchmarks/bench_interleaved.py --models replknet_31b:deep replknet_31b:fused \
        swin_base_patch4_window7_224 --batch-size 8 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=["replknet_31b:fused", "replknet_31b:deep", "swin_base_patch4_window7_224"],
        help="NAME or NAME:FORM (form train/fused/deep for RepLKNet)",
    )
    parser.add_argument("--baseline", default="swin_base_patch4_window7_224")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="write the per-round numbers here")
    parser.add_argument(
        "--system-allocator", action="store_true", help="do not call replknet.runtime.keep_freed_memory()"
    )
    args = parser.parse_args()

    import torch

    from replknet.runtime import benchmark_allocator

    allocator = benchmark_allocator(args.system_allocator)

    from replknet.deploy.bench import build_bench_model, device_description, measure_throughput

    models = {}
    for spec in args.models:
        name, _, form = spec.partition(":")
        model = build_bench_model(name, form or "train", args.img_size)
        if model is None:
            raise SystemExit(f"{name} has no {form} form")
        models[spec] = model
    print(
        f"{device_description(args.device)}, torch {torch.__version__}, batch {args.batch_size}, {args.img_size}px, "
        f"{args.dtype}, allocator: {allocator}, {args.rounds} rounds of ({args.warmup} warm-up + {args.iterations} timed forwards) per model"
    )
    speeds: dict[str, list[float]] = {spec: [] for spec in models}
    for round_index in range(args.rounds):
        for spec, model in models.items():
            speed, _ = measure_throughput(
                model, args.batch_size, args.img_size, args.warmup, args.iterations, args.device, args.dtype
            )
            speeds[spec].append(speed)
            print(f"  round {round_index + 1} {spec}: {speed:.3f} images/s", flush=True)
    medians = {spec: statistics.median(values) for spec, values in speeds.items()}
    base = next((v for k, v in medians.items() if k.split(":")[0] == args.baseline), None)
    print(f"{'model':<36} {'median img/s':>12}  {'rounds':<28} {'vs ' + args.baseline if base else ''}")
    for spec, median in medians.items():
        rounds = " ".join(f"{v:.3f}" for v in speeds[spec])
        ratio = f"{median / base:.2f}x" if base else ""
        print(f"{spec:<36} {median:>12.3f}  {rounds:<28} {ratio}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"settings": vars(args), "images_per_second": speeds}, handle, indent=2)


if __name__ == "__main__":
    main()
