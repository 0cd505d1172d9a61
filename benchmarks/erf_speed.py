"""Time one ERF contribution map (forward + input gradient) with the fast depthwise op and with plain nn.Conv2d.

    python benchmarks/erf_speed.py --model replknet_31b --size 1024

Prints seconds per image for ``impl="auto"`` (replknet.ops' fastest path) and for ``impl_override("reference")``
(plain ``F.conv2d``, what ``nn.Conv2d`` runs), their ratio, and the relative difference of the two maps.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

import replknet
from replknet.analysis.erf import compute_erf
from replknet.ops import available_impls, impl_override
from replknet.testing import relative_error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="replknet_31b")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=1, help="timed images per implementation (median)")
    parser.add_argument("--grad-checkpointing", action="store_true", help="recompute activations (less memory)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = replknet.create_model(args.model)
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(3, args.size, args.size, generator=generator)
    # Warm up both paths once at a small size (allocations, FFT plans, oneDNN primitives).
    for impl in ("auto", "reference"):
        with impl_override(impl):
            compute_erf(model, [torch.randn(3, 128, 128)])

    # Wall time and this process's CPU time (all threads): on a shared machine the CPU time is the steadier figure.
    wall, cpu, maps = {}, {}, {}
    for impl in ("auto", "reference"):
        walls, cpus = [], []
        for _ in range(args.repeats):
            with impl_override(impl):
                start, start_cpu = time.perf_counter(), time.process_time()
                result = compute_erf(model, [image], grad_checkpointing=args.grad_checkpointing)
                walls.append(time.perf_counter() - start)
                cpus.append(time.process_time() - start_cpu)
        maps[impl] = torch.from_numpy(result.contribution)
        wall[impl], cpu[impl] = sorted(walls)[len(walls) // 2], sorted(cpus)[len(cpus) // 2]

    print(
        f"ERF contribution map, {args.model}, one {args.size}x{args.size} image, {torch.get_num_threads()} threads, "
        f"grad checkpointing {'on' if args.grad_checkpointing else 'off'}, impls registered: {available_impls()}"
    )
    print("| depthwise conv | wall s / image | CPU s / image | speed-up (wall) | speed-up (CPU) |")
    print("|---|---|---|---|---|")
    for impl, label in (("auto", "replknet.ops (auto)"), ("reference", "nn.Conv2d (reference)")):
        print(
            f"| {label} | {wall[impl]:.1f} | {cpu[impl]:.1f} | {wall['reference'] / wall[impl]:.2f}x "
            f"| {cpu['reference'] / cpu[impl]:.2f}x |"
        )
    print(f"maps agree to relative error {relative_error(maps['auto'], maps['reference']):.2e}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
