"""Depthwise convolution at UniRepLKNet's shapes on CPU: every implementation next to ``impl="auto"``.

Two tables, each row one shape, every implementation timed in alternating rounds (one call of each per round, the
minimum over rounds kept), the fastest marked, and the auto rule's choice with its time over the fastest:

- ``dense``: the kernel sizes of UniRepLKNet's blocks (3, 5 and the large kernels 7..17 of its table; the default
  variants use 3 and 13) at the stage shapes (planes 56/28/14/7 at 224 input, the chosen variant's widths);
- ``dilated``: the training form's dilated branches (every (k, r) of the DilatedReparamBlock table with r > 1).

    python benchmarks/dwconv_unireplknet.py                                  # both, variant s, B=1 and 16
    python benchmarks/dwconv_unireplknet.py --tables dilated --batch-sizes 16 --layouts nchw cl

Times are milliseconds of one forward ("fwd", no autograd) or forward + backward for input and weight ("f+b").
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import torch

import replknet.ops as ops

# stage widths at 224 input (planes 56, 28, 14, 7) of the UniRepLKNet variants
VARIANT_DIMS = {
    "a": (40, 80, 160, 320),
    "p": (64, 128, 256, 512),
    "t": (80, 160, 320, 640),
    "s": (96, 192, 384, 768),
    "b": (128, 256, 512, 1024),
}
PLANES = (56, 28, 14, 7)
DENSE_KERNELS = (3, 5, 7, 9, 11, 13, 15, 17)
# (k, r) of the DilatedReparamBlock table with r > 1
DILATED_BRANCHES = ((3, 2), (3, 3), (3, 4), (3, 5), (3, 7), (5, 2), (7, 2), (9, 2))
DENSE_IMPLS = ("native_nchw", "native_cl", "fft", "hybrid", "hybrid_nchw", "toeplitz")
DILATED_IMPLS = ("native_nchw", "native_cl", "dense", "polyphase", "hybrid")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def make_step(impl: str, x: torch.Tensor, weight: torch.Tensor, dilation: int, backward: bool) -> Callable[[], None]:
    """One forward (and backward for input and weight) of ``impl`` on fresh leaves of ``x`` and ``weight``."""
    if not backward:

        def forward() -> None:
            with torch.no_grad():
                ops.dwconv2d(x, weight, impl=impl, dilation=dilation)

        return forward
    x_leaf, w_leaf = x.detach().requires_grad_(), weight.detach().requires_grad_()
    grad = torch.randn_like(x)

    def forward_backward() -> None:
        x_leaf.grad = w_leaf.grad = None
        ops.dwconv2d(x_leaf, w_leaf, impl=impl, dilation=dilation).backward(grad)

    return forward_backward


def auto_choice(x: torch.Tensor, weight: torch.Tensor, dilation: int, backward: bool) -> str:
    from replknet.ops.cpu import cpu_auto_rule
    from replknet.ops.cpu_dilated import cpu_dilated_auto_rule

    with torch.set_grad_enabled(backward):
        probe = x.detach().requires_grad_(backward)
        return cpu_dilated_auto_rule(probe, weight, dilation) if dilation > 1 else cpu_auto_rule(probe, weight)


def skip(impl: str, pixels: int) -> bool:
    return impl == "toeplitz" and pixels > 196  # (H W)^2 matrices per channel: small planes only


def time_row(steps: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Minimum milliseconds per implementation over ``rounds`` alternating rounds (after one warm-up call each)."""
    for step in steps.values():
        step()
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            best[name] = min(best[name], (time.perf_counter() - start) * 1e3)
    return best


def run_table(
    title: str, cases: list[tuple[int, int, int, int]], impls: tuple[str, ...], args: argparse.Namespace
) -> None:
    """``cases``: (channels, plane, kernel_size, dilation)."""
    print(f"\n{title}")
    header = f"{'B':>3} {'lay':>4} {'C':>5} {'H':>3} {'k':>3} {'r':>2} {'pass':>4} | "
    header += " ".join(f"{impl:>11}" for impl in impls) + f" | {'fastest':>11} {'auto':>11} {'auto/best':>9}"
    print(header)
    print("-" * len(header))
    worst = []
    for batch in args.batch_sizes:
        for layout in args.layouts:
            memory_format = torch.channels_last if layout == "cl" else torch.contiguous_format
            for channels, plane, kernel_size, dilation in cases:
                x = torch.randn(batch, channels, plane, plane).contiguous(memory_format=memory_format)
                weight = torch.randn(channels, 1, kernel_size, kernel_size) / kernel_size
                for backward in [pass_ == "f+b" for pass_ in args.passes]:
                    names = [impl for impl in impls if not skip(impl, plane * plane)]
                    steps = {impl: make_step(impl, x, weight, dilation, backward) for impl in names}
                    chosen = auto_choice(x, weight, dilation, backward)
                    ms = time_row(steps, args.rounds)
                    fastest = min(ms, key=ms.get)
                    # the auto choice's time from the same rounds (auto dispatches to exactly that impl)
                    ratio = ms[chosen] / ms[fastest] if chosen in ms else float("nan")  # nan: auto's impl not timed
                    worst.append((ratio, batch, layout, channels, plane, kernel_size, dilation, backward, chosen))
                    cells = " ".join(f"{ms[impl]:>11.2f}" if impl in ms else f"{'-':>11}" for impl in impls)
                    label = "f+b" if backward else "fwd"
                    print(
                        f"{batch:>3} {layout:>4} {channels:>5} {plane:>3} {kernel_size:>3} {dilation:>2} {label:>4} | "
                        f"{cells} | {fastest:>11} {chosen:>11} {ratio:>9.2f}",
                        flush=True,
                    )
    worst.sort(reverse=True)
    print(
        "largest auto/best ratios:",
        ", ".join(
            f"{w[0]:.2f} (B{w[1]} {w[2]} C{w[3]} H{w[4]} k{w[5]} r{w[6]} {'f+b' if w[7] else 'fwd'} {w[8]})"
            for w in worst[:5]
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", nargs="+", default=["dense", "dilated"], choices=["dense", "dilated"])
    parser.add_argument("--variant", default="s", choices=sorted(VARIANT_DIMS), help="stage widths (default: s)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--layouts", nargs="+", default=["nchw"], choices=["nchw", "cl"])
    parser.add_argument("--kernels", type=int, nargs="+", default=list(DENSE_KERNELS), help="dense table K")
    parser.add_argument("--planes", type=int, nargs="+", default=list(PLANES), choices=list(PLANES))
    parser.add_argument("--passes", nargs="+", default=["fwd", "f+b"], choices=["fwd", "f+b"])
    parser.add_argument("--impls", nargs="+", default=None, help="implementations to time (default: all)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"{cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{torch.backends.cpu.get_cpu_capability()}, variant {args.variant}, {args.rounds} alternating rounds (min)"
    )
    dims = dict(zip(PLANES, VARIANT_DIMS[args.variant], strict=True))
    if "dense" in args.tables:
        cases = [(dims[plane], plane, k, 1) for plane in args.planes for k in args.kernels]
        run_table("Dense kernels (dilation 1)", cases, tuple(args.impls or DENSE_IMPLS), args)
    if "dilated" in args.tables:
        cases = [(dims[plane], plane, k, r) for plane in args.planes for k, r in DILATED_BRANCHES]
        run_table("Dilated branches", cases, tuple(args.impls or DILATED_IMPLS), args)


if __name__ == "__main__":
    main()
