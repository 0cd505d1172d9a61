"""Inference and one training step of models with depthwise convolutions, before and after ``accelerate`` (CPU).

For each model: ``replknet.ops.accelerate(model)`` converts its stride-1 depthwise ``nn.Conv2d`` to
``DepthwiseConv2d``; "before" runs every converted layer through ``impl="reference"`` (``F.conv2d``, exactly what
the untouched ``nn.Conv2d`` computes), "after" through ``impl="auto"``. Models built on ``DepthwiseConv2d`` already
(RepLKNet, UniRepLKNet: any name ``replknet.create_model`` accepts) get the same comparison: plain PyTorch vs auto.
Same model object, same inputs; before and after alternate within each round and the minimum over rounds is kept.

    python benchmarks/accelerate.py                                   # the default timm models, 2 threads
    python benchmarks/accelerate.py --models convnext_base unireplknet_s --channels-last

A training step is forward, cross-entropy on fixed random labels, backward and an AdamW step, in train mode.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections import Counter

import timm
import torch
import torch.nn.functional as F

import replknet
import replknet.ops as ops

# timm models with depthwise kernels of 7 and more (convnext_base first, as the issue asks): ConvNeXt (7x7),
# MetaFormer ConvFormer (7x7 separable), EdgeNeXt (3..9), MixNet (3..9 in MixedConv2d), RDNet (7x7),
# MambaOut (7x7 gated CNN), FastViT (7x7 large-kernel stages, training form)
DEFAULT_MODELS = (
    "convnext_base",
    "convformer_s18",
    "edgenext_small",
    "mixnet_m",
    "rdnet_tiny",
    "mambaout_tiny",
    "fastvit_sa12",
)


def cpu_description() -> str:
    """CPU model name and the vector extensions that matter to PyTorch's kernels."""
    name, flags = platform.processor() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    present = [flag for flag in wanted if flag in flags]
    return (
        f"{name} ({', '.join(present) or 'flags unknown'}; torch capability {torch.backends.cpu.get_cpu_capability()})"
    )


def timed(fn, rounds_ms: list[float]) -> None:
    start = time.perf_counter()
    fn()
    rounds_ms.append((time.perf_counter() - start) * 1e3)


def measure_model(name: str, args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    model = replknet.create_model(name, num_classes=1000)
    report = ops.accelerate(model)
    depthwise = Counter(m.kernel_size[0] for m in model.modules() if isinstance(m, ops.DepthwiseConv2d))
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    size = args.image_size
    images = torch.randn(args.batch_size, 3, size, size).contiguous(memory_format=memory_format)
    train_images = torch.randn(args.train_batch_size, 3, size, size).contiguous(memory_format=memory_format)
    labels = torch.randint(0, 1000, (args.train_batch_size,))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def inference(impl: str):
        def run() -> None:
            model.eval()
            with torch.no_grad(), ops.impl_override(impl):
                model(images)

        return run

    def train_step(impl: str):
        def run() -> None:
            model.train()
            optimizer.zero_grad(set_to_none=True)
            with ops.impl_override(impl):
                loss = F.cross_entropy(model(train_images), labels)
            loss.backward()
            optimizer.step()

        return run

    times: dict[str, list[float]] = {key: [] for key in ("infer_ref", "infer_auto", "train_ref", "train_auto")}
    steps = {"infer_ref": inference("reference"), "infer_auto": inference("auto")}
    if not args.skip_train:
        steps |= {"train_ref": train_step("reference"), "train_auto": train_step("auto")}
    for step in steps.values():  # warm-up: oneDNN primitive caches, allocator, FFT plans
        step()
    for _ in range(args.rounds):
        for key, step in steps.items():
            timed(step, times[key])
    params = sum(p.numel() for p in model.parameters())
    return {
        "name": name,
        "params_m": params / 1e6,
        "depthwise": depthwise,
        "converted": len(report),
        **{key: min(values) if values else float("nan") for key, values in times.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="timm or replknet model names")
    parser.add_argument("--batch-size", type=int, default=8, help="inference batch")
    parser.add_argument("--train-batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (minimum kept)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--channels-last", action="store_true", help="model and inputs in channels_last")
    parser.add_argument("--skip-train", action="store_true", help="inference only")
    parser.add_argument(
        "--system-allocator", action="store_true", help="do not call replknet.runtime.keep_freed_memory()"
    )
    args = parser.parse_args()
    known = set(timm.list_models())  # replknet registers its models with timm
    unknown = [name for name in args.models if name.split(".")[0] not in known]
    if unknown:
        parser.error(f"unknown model(s) {unknown}: use timm or replknet model names")
    torch.set_num_threads(args.threads)
    from replknet.runtime import benchmark_allocator

    allocator = benchmark_allocator(args.system_allocator)
    layout = "channels_last" if args.channels_last else "NCHW"
    print(f"CPU: {cpu_description()}")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {layout}, {args.image_size}px, inference "
        f"batch {args.batch_size}, train batch {args.train_batch_size} (AdamW step), {args.rounds} alternating "
        f"rounds (min), allocator: {allocator}"
    )
    print("before: converted depthwise layers as F.conv2d (= nn.Conv2d); after: replknet.ops auto")
    header = (
        f"{'model':<18} {'params':>7} {'dw layers (K: n)':<26} | {'infer before':>12} {'after':>8} {'x':>5} | "
        f"{'train before':>12} {'after':>8} {'x':>5}"
    )
    print(header)
    print("-" * len(header))
    for name in args.models:
        row = measure_model(name, args)
        kernels = ", ".join(f"{k}: {n}" for k, n in sorted(row["depthwise"].items()))
        infer_x = row["infer_ref"] / row["infer_auto"]
        train_x = row["train_ref"] / row["train_auto"]
        print(
            f"{name:<18} {row['params_m']:>6.1f}M {kernels:<26} | "
            f"{row['infer_ref']:>10.0f}ms {row['infer_auto']:>6.0f}ms {infer_x:>5.2f} | "
            f"{row['train_ref']:>10.0f}ms {row['train_auto']:>6.0f}ms {train_x:>5.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
