"""Inference speed of the three forms of a model: training form, official fusion, deep fusion.

Side by side in one run (ratios matter; the machines are shared):

    python benchmarks/fusion.py --model replknet_31b --size 224 --batch-sizes 1 8
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import replknet
from replknet.testing import randomize_bn_stats, relative_error


def time_forward(model: torch.nn.Module, x: torch.Tensor, warmup: int, iters: int) -> float:
    """Median seconds per forward pass (eval, no_grad)."""
    with torch.no_grad():
        for _ in range(warmup):
            model(x)
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="replknet_31b")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = randomize_bn_stats(replknet.create_model(args.model).eval())
    forms = {
        "training form": model,
        "official fusion": replknet.reparameterize(model),
        "deep fusion": replknet.reparameterize(model, deep=True),
    }
    bn_counts = {name: sum(isinstance(m, torch.nn.BatchNorm2d) for m in form.modules()) for name, form in forms.items()}
    print(f"{args.model} at {args.size}x{args.size}, {torch.get_num_threads()} threads, median of {args.iters}")
    print(
        f"{'form':<16} {'BNs':>5} "
        + " ".join(f"{'B=' + str(b) + ' ms':>11} {'img/s':>8} {'speed-up':>8}" for b in args.batch_sizes)
        + "  max rel diff"
    )
    base: dict[int, float] = {}
    for name, form in forms.items():
        cells = []
        diff = 0.0
        for batch in args.batch_sizes:
            x = torch.randn(batch, 3, args.size, args.size)
            seconds = time_forward(form, x, args.warmup, args.iters)
            base.setdefault(batch, seconds)
            cells.append(f"{seconds * 1e3:>11.1f} {batch / seconds:>8.1f} {base[batch] / seconds:>7.2f}x")
            with torch.no_grad():
                diff = max(diff, relative_error(form(x), model(x)))
        print(f"{name:<16} {bn_counts[name]:>5} " + " ".join(cells) + f"  {diff:.1e}")


if __name__ == "__main__":
    main()
