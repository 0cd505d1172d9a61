"""Training throughput of the demo models side by side: forward + backward + AdamW step, images/s.

    python benchmarks/train_throughput.py --size 64 --batch-size 64 --threads 2
    python benchmarks/train_throughput.py --models replknet_31b --size 224 --batch-size 8 --steps 6 \
        --memory-formats contiguous channels_last

Prints one row per model (and memory format) with images/s (median of the timed steps) and the ratio to the first
row. The rows' steps are taken in alternation (one step of each row per round, the order reversed every other
round), so a change of machine load hits every row alike. Wall-clock numbers depend on the machine and its load;
compare rows of one run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import replknet
from replknet.runtime import keep_freed_memory


class Trainer:
    """One model's training step on one random batch, in one memory format."""

    def __init__(self, name: str, memory_format: str, size: int, batch_size: int) -> None:
        torch.manual_seed(0)
        self.layout = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
        self.model = replknet.create_model(name, num_classes=10).to(memory_format=self.layout)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.x = torch.randn(batch_size, 3, size, size).contiguous(memory_format=self.layout)
        self.y = torch.randint(0, 10, (batch_size,))
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def step(self, record: bool) -> None:
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        loss = F.cross_entropy(self.model(self.x), self.y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if record:
            self.wall.append(time.perf_counter() - start_wall)
            self.cpu.append(time.process_time() - start_cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["replknet_tiny", "replknet_tiny_k3"])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--memory-formats", nargs="+", default=["contiguous"], choices=["contiguous", "channels_last"])
    args = parser.parse_args()
    keep_freed_memory()  # as the replknet command does
    torch.set_num_threads(args.threads)
    print(f"training step, {args.size}px, batch {args.batch_size}, {args.threads} threads, torch {torch.__version__}")
    rows = {
        (name, layout): Trainer(name, layout, args.size, args.batch_size)
        for name in args.models
        for layout in args.memory_formats
    }
    order = list(rows)
    for round_index in range(args.warmup + args.steps):
        for key in order if round_index % 2 == 0 else order[::-1]:
            rows[key].step(record=round_index >= args.warmup)
    print(f"{'model':<20} {'memory format':<14} {'img/s (wall)':>13} {'img/s per CPU-s':>16} {'ratio (wall)':>13}")
    first = None
    for (name, layout), trainer in rows.items():
        wall = args.batch_size / statistics.median(trainer.wall)
        cpu = args.batch_size / statistics.median(trainer.cpu)
        first = first or wall
        print(f"{name:<20} {layout:<14} {wall:>13.1f} {cpu:>16.1f} {wall / first:>13.2f}")


if __name__ == "__main__":
    main()
