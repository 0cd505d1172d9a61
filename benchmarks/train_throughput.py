"""Training throughput of the demo models side by side: forward + backward + AdamW step, images/s.

    python benchmarks/train_throughput.py --size 64 --batch-size 64 --threads 2

Prints one row per model with images/s (median of the timed steps) and the ratio to the first model. Wall-clock
numbers depend on the machine and its load; compare rows of one run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import replknet


def measure(name: str, size: int, batch_size: int, steps: int, warmup: int) -> tuple[float, float]:
    """Median images/s of training steps, by wall clock and by process CPU time."""
    torch.manual_seed(0)
    model = replknet.create_model(name, num_classes=10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch_size, 3, size, size)
    y = torch.randint(0, 10, (batch_size,))
    wall, cpu = [], []
    for step in range(warmup + steps):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= warmup:
            wall.append(time.perf_counter() - start_wall)
            cpu.append(time.process_time() - start_cpu)
    return batch_size / statistics.median(wall), batch_size / statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["replknet_tiny", "replknet_tiny_k3"])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"training step, {args.size}px, batch {args.batch_size}, {args.threads} threads, torch {torch.__version__}")
    print(f"{'model':<20} {'img/s (wall)':>13} {'img/s per CPU-s':>16} {'ratio (wall)':>13}")
    first = None
    for name in args.models:
        wall, cpu = measure(name, args.size, args.batch_size, args.steps, args.warmup)
        first = first or wall
        print(f"{name:<20} {wall:>13.1f} {cpu:>16.1f} {wall / first:>13.2f}")


if __name__ == "__main__":
    main()
