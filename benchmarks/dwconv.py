"""Depthwise large-kernel convolution on CPU: native NCHW vs native channels_last vs ``replknet.ops``.

Prints, for the RepLKNet-31B stage shapes at 224 input, forward and forward+backward times (ms) and nominal
GFLOP/s (``2 B C H W K^2`` per pass; forward+backward counts three passes), the ratios of ours to each native
layout, the four-stage totals, and this machine's fp32 matmul GFLOP/s measured in the same run.

    python benchmarks/dwconv.py                       # B=1 and B=16, all stages
    python benchmarks/dwconv.py --calibrate           # the crossover table behind the CPU auto rule
    python benchmarks/dwconv.py --dtype bf16 --small  # bf16 tensors (columns "ours fp32", "x fp32": the same
                                                      # op on float32 tensors), plus the 5x5 re-param branches

"native NCHW" is ``F.conv2d`` on an NCHW tensor (what a plain ``nn.Conv2d`` model runs), "native CL" is
``F.conv2d`` on a channels_last tensor (layout conversion not timed), "ours" is ``replknet.ops.dwconv2d`` with
``impl="auto"`` on an NCHW tensor (what the models feed it); "ours CL-in" is ours on the channels_last tensor.
With ``--dtype bf16`` every column gets bf16 tensors (the native columns then run oneDNN's bf16 kernels, as a
bf16 model's ``nn.Conv2d`` would).
"""

from __future__ import annotations

import argparse
import functools
import time

import torch
import torch.nn.functional as F

import replknet.ops as ops
from replknet.ops.cpu import cpu_auto_rule

STAGES = ((128, 56, 31), (256, 28, 29), (512, 14, 27), (1024, 7, 13))
SMALL_KERNEL = 5  # the parallel 5x5 branch of every RepLKNet-31B block in training form
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


CLOCK = time.perf_counter  # --cpu-time: time.process_time


def timeit(fn, repeats: int, slow_seconds: float = 2.0) -> float:
    """Best-of-n milliseconds of ``fn()`` after one warm-up (one timed run if the warm-up took long).

    The minimum, not the median: on a machine shared with other jobs, a millisecond-scale op is often preempted
    for tens of milliseconds, and the minimum is the estimate least distorted by that. With ``--cpu-time`` the
    clock is the process's CPU time, which preemption does not inflate (with one thread it is the op's time; with
    more it also counts the threads' waits).
    """
    start = CLOCK()
    fn()
    first = CLOCK() - start
    if first > slow_seconds:
        repeats = 1
    elif first < 0.05:
        repeats = max(repeats, 20)
    times = []
    for _ in range(repeats):
        start = CLOCK()
        fn()
        times.append(CLOCK() - start)
    return min(times) * 1e3


def matmul_gflops(size: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    ms = timeit(lambda: torch.mm(a, b), repeats)
    return 2 * size**3 / ms / 1e6


def make_step(kind: str, x: torch.Tensor, weight: torch.Tensor, backward: bool):
    """A closure running one forward (and backward) of implementation ``kind`` on fresh leaf tensors."""
    channels, kernel_size = weight.shape[0], weight.shape[-1]
    if kind in ("cl", "auto_cl"):
        x = x.contiguous(memory_format=torch.channels_last)
    impl = "auto" if kind == "auto_cl" else kind

    def conv(inp, w):
        if kind in ("nchw", "cl"):
            return F.conv2d(inp, w, padding=kernel_size // 2, groups=channels)
        return ops.dwconv2d(inp, w, impl=impl)

    if not backward:

        def forward_only():
            with torch.no_grad():
                conv(x, weight)

        return forward_only
    x_leaf, w_leaf = x.detach().requires_grad_(), weight.detach().requires_grad_()
    grad = torch.randn_like(x)

    def forward_backward():
        x_leaf.grad = w_leaf.grad = None
        conv(x_leaf, w_leaf).backward(grad)

    return forward_backward


def run_table(batch_sizes: list[int], repeats: int, stages: list[int], dtype: torch.dtype, small: bool) -> None:
    low_precision = dtype != torch.float32
    header = (
        f"{'B':>3} {'C':>5} {'H':>3} {'K':>3} {'pass':>8} | {'NCHW ms':>9} {'CL ms':>8} {'ours ms':>8} | "
        f"{'NCHW GF/s':>9} {'CL GF/s':>8} {'ours GF/s':>9} | {'x NCHW':>7} {'x CL':>6} {'x best':>6} | "
        f"{'ours CL-in':>10}" + (f" {'ours fp32':>9} {'x fp32':>6}" if low_precision else "") + "  ours impl"
    )
    print(header)
    print("-" * len(header))
    shapes = [STAGES[i - 1] for i in stages]
    if small:
        shapes += [(channels, size, SMALL_KERNEL) for channels, size, _ in shapes]
    totals: dict[tuple[int, str], list[float]] = {}
    for batch in batch_sizes:
        for channels, size, kernel_size in shapes:
            x32 = torch.randn(batch, channels, size, size)
            weight32 = torch.randn(channels, 1, kernel_size, kernel_size) / kernel_size
            x, weight = x32.to(dtype), weight32.to(dtype)
            flops = 2 * batch * channels * size * size * kernel_size**2
            for backward in (False, True):
                label = "fwd+bwd" if backward else "fwd"
                with torch.set_grad_enabled(backward):
                    probe = x.detach().requires_grad_(backward)
                    chosen = cpu_auto_rule(probe, weight)
                kinds = ("nchw", "cl", "auto", "auto_cl")
                ms = [timeit(make_step(kind, x, weight, backward), repeats) for kind in kinds]
                passes = 3 if backward else 1
                gflops = [passes * flops / t / 1e6 for t in ms]
                total = totals.setdefault((batch, label), [0.0, 0.0, 0.0, 0.0])
                for i in range(3):
                    total[i] += ms[i]
                line = (
                    f"{batch:>3} {channels:>5} {size:>3} {kernel_size:>3} {label:>8} | {ms[0]:>9.1f} {ms[1]:>8.1f} "
                    f"{ms[2]:>8.1f} | {gflops[0]:>9.1f} {gflops[1]:>8.1f} {gflops[2]:>9.1f} | "
                    f"{ms[0] / ms[2]:>7.1f} {ms[1] / ms[2]:>6.1f} {min(ms[:2]) / ms[2]:>6.2f} | {ms[3]:>10.1f}"
                )
                if low_precision:
                    ours32 = timeit(make_step("auto", x32, weight32, backward), repeats)
                    total[3] += ours32
                    line += f" {ours32:>9.1f} {ours32 / ms[2]:>6.2f}"
                print(line + f"  {chosen}", flush=True)
    print()
    print("Shapes above together (ms): NCHW / CL / ours, and speed-up of ours")
    for (batch, label), (nchw, cl, ours, ours32) in totals.items():
        line = (
            f"  B={batch:<3} {label:>8}: {nchw:9.1f} / {cl:8.1f} / {ours:8.1f}   "
            f"x{nchw / ours:.1f} vs NCHW, x{cl / ours:.1f} vs CL"
        )
        if low_precision:
            line += f", x{ours32 / ours:.2f} vs ours on float32 tensors ({ours32:.1f} ms)"
        print(line)


def run_calibration(
    batch_sizes: list[int], repeats: int, dtype: torch.dtype, kernel_sizes: list[int], channels_last: bool = False
) -> None:
    """Every impl on a grid of (K, plane size) at the RepLKNet channel widths: the table behind the auto rule."""
    impls = ("native_nchw", "native_cl", "fft", "hybrid", "toeplitz")
    print(f"{'B':>3} {'C':>5} {'H':>3} {'K':>3} {'pass':>8} | " + " ".join(f"{i:>11}" for i in impls) + " | best")
    for batch in batch_sizes:
        for channels, size, _ in STAGES:
            for kernel_size in kernel_sizes:
                x = torch.randn(batch, channels, size, size, dtype=dtype)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                weight = (torch.randn(channels, 1, kernel_size, kernel_size) / kernel_size).to(dtype)
                for backward in (False, True):
                    row = {}
                    for impl in impls:
                        if impl == "hybrid" and not backward:
                            continue  # hybrid's forward is native_cl's
                        # oneDNN's GEMM fallbacks (NCHW forward K > 9, grad_weight K > 13) are 10-100x off the pace
                        if impl == "native_nchw" and kernel_size > (9 if backward else 13):
                            continue
                        if impl == "native_cl" and backward and kernel_size > 13:
                            continue
                        if impl == "toeplitz" and size * size > 196:
                            continue  # (H W)^2 matrices per channel: only small planes
                        row[impl] = timeit(make_step(impl, x, weight, backward), repeats)
                    best = min(row, key=row.get)
                    cells = " ".join(f"{row[i]:>11.2f}" if i in row else f"{'-':>11}" for i in impls)
                    label = "fwd+bwd" if backward else "fwd"
                    print(
                        f"{batch:>3} {channels:>5} {size:>3} {kernel_size:>3} {label:>8} | {cells} | {best}", flush=True
                    )


def _grad_weight_call(method: str, x: torch.Tensor, grad_output: torch.Tensor, weight: torch.Tensor) -> None:
    from replknet.ops import fft
    from replknet.ops.cpu import swapped_grad_weight
    from replknet.ops.toeplitz import toeplitz_grad_weight

    if method == "fft":
        fft.fft_backward(x, weight, grad_output, need_input=False, need_weight=True)
    elif method == "swapped":
        swapped_grad_weight(x, grad_output, weight.shape[-1])
    else:
        toeplitz_grad_weight(x, grad_output, weight.shape[-1])


def run_grad_weight_calibration(
    batch_sizes: list[int], repeats: int, dtype: torch.dtype, kernel_sizes: list[int]
) -> None:
    """The hybrid's weight-gradient methods on the same grid: the table behind ``cpu._grad_weight_method``."""
    from replknet.ops.cpu import _grad_weight_method

    methods = ("fft", "swapped", "toeplitz")
    print(f"{'B':>3} {'C':>5} {'H':>3} {'K':>3} | " + " ".join(f"{m:>9}" for m in methods) + " | best    rule")
    for batch in batch_sizes:
        for channels, size, _ in STAGES:
            for kernel_size in kernel_sizes:
                x = torch.randn(batch, channels, size, size, dtype=dtype)
                grad_output = torch.randn(batch, channels, size, size, dtype=dtype)
                weight = torch.randn(channels, 1, kernel_size, kernel_size, dtype=dtype)
                methods_here = methods if size * size <= 196 else methods[:2]  # (H W)^2 tables: small planes only
                row = {
                    method: timeit(functools.partial(_grad_weight_call, method, x, grad_output, weight), repeats)
                    for method in methods_here
                }
                best = min(row, key=row.get)
                cells = " ".join(f"{row[m]:>9.2f}" if m in row else f"{'-':>9}" for m in methods)
                rule = _grad_weight_method(kernel_size, size * size, batch)
                print(f"{batch:>3} {channels:>5} {size:>3} {kernel_size:>3} | {cells} | {best:<8}{rule}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--stages", type=int, nargs="+", default=[1, 2, 3, 4], choices=[1, 2, 3, 4])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--calibrate", action="store_true", help="print the per-impl crossover table instead")
    parser.add_argument(
        "--calibrate-grad-weight", action="store_true", help="print the hybrid's grad_weight crossover table instead"
    )
    parser.add_argument("--cpu-time", action="store_true", help="time by process CPU time (loaded machines)")
    parser.add_argument("--dtype", default="fp32", choices=tuple(DTYPES), help="dtype of every tensor")
    parser.add_argument("--channels-last", action="store_true", help="--calibrate: channels_last input")
    parser.add_argument("--small", action="store_true", help="table: also the stages' 5x5 re-param branches")
    parser.add_argument(
        "--kernel-sizes", type=int, nargs="+", default=[3, 5, 7, 9, 13, 17, 27, 31], help="--calibrate: K grid"
    )
    parser.add_argument(
        "--system-allocator", action="store_true", help="do not call replknet.runtime.keep_freed_memory()"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_time:
        global CLOCK
        CLOCK = time.process_time
    from replknet.runtime import benchmark_allocator

    allocator = benchmark_allocator(args.system_allocator)
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}, "
        f"allocator: {allocator}, clock: {'process CPU time' if args.cpu_time else 'wall'}"
    )
    dtype = DTYPES[args.dtype]
    print(f"fp32 matmul (2048^3): {matmul_gflops():.1f} GFLOP/s")
    if dtype != torch.float32:
        print(f"{args.dtype} matmul (2048^3): {matmul_gflops(dtype=dtype):.1f} GFLOP/s; tensors in {args.dtype}")
    if args.calibrate_grad_weight:
        run_grad_weight_calibration(args.batch_sizes, args.repeats, dtype, args.kernel_sizes)
    elif args.calibrate:
        run_calibration(args.batch_sizes, args.repeats, dtype, args.kernel_sizes, args.channels_last)
    else:
        run_table(args.batch_sizes, args.repeats, args.stages, dtype, args.small)
    print(f"fp32 matmul (2048^3), end of run: {matmul_gflops():.1f} GFLOP/s")


if __name__ == "__main__":
    main()
