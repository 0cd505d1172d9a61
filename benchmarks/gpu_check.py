"""One-shot GPU check of the Triton depthwise convolution (issue 4): correctness, kernel timings, model throughput.

Run on one GPU (well under 10 minutes on an H200):

    python benchmarks/gpu_check.py --out gpu_check.json

Sections (each in its own try/except, so one failure keeps the others; a time budget skips what is left):
  (a) Triton forward/grad_input/grad_weight/grad_bias vs float64 on the RepLKNet-31B stage shapes, fp32/fp16/bf16,
      NCHW and channels_last (batch 2).
  (b) forward and forward+backward at batch 64 on those shapes: cuDNN NCHW, cuDNN channels_last (PyTorch's own
      ``F.conv2d``) and ours in both layouts; median of CUDA-event timings after warm-up (and autotuning).
  (c) RepLKNet-31B and -31L throughput at batch 64, 224 and 384 (Swin's method: eval, no_grad, 50 warm-up passes,
      30 timed passes, synchronised) with ``impl_override`` reference / triton / auto, fused (deploy) form, fp32;
      and for 31B the depthwise share of latency (profiler, and an ablation) next to its share of MACs.
Prints a table last and writes everything as JSON to ``--out``. Without CUDA it says so and exits 0;
``--smoke`` runs tiny versions of every section on the CPU (Triton under TRITON_INTERPRET=1) to test the plumbing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

STAGES_31B = [(128, 56, 31), (256, 28, 29), (512, 14, 27), (1024, 7, 13)]  # (C, H=W, K) at 224 input
DTYPES = ("float32", "float16", "bfloat16")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_check.json", help="where to write the JSON results")
    parser.add_argument("--batch", type=int, default=64, help="batch for the timings (b) and (c)")
    parser.add_argument("--models", default="replknet_31b,replknet_31l", help="comma-separated model names for (c)")
    parser.add_argument("--resolutions", default="224,384", help="comma-separated input sizes for (c)")
    parser.add_argument("--warmup", type=int, default=50, help="warm-up passes for model throughput")
    parser.add_argument("--iters", type=int, default=30, help="timed passes for model throughput")
    parser.add_argument("--budget-s", type=float, default=510.0, help="skip remaining work after this many seconds")
    parser.add_argument("--sections", default="a,b,c", help="which sections to run (a, b, c)")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run of every section (plumbing check)")
    return parser.parse_args(argv)


class Budget:
    """Wall-clock budget shared by all sections."""

    def __init__(self, seconds: float) -> None:
        self.start = time.perf_counter()
        self.seconds = seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)

    def exhausted(self) -> bool:
        return self.left() <= 0


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def median_ms(fn: Callable[[], object], device: str, warmup: int, iters: int) -> float:
    """Median time of ``fn`` in ms: CUDA events on a GPU, perf_counter on the CPU (smoke runs only)."""
    import torch

    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            tic = time.perf_counter()
            fn()
            times.append((time.perf_counter() - tic) * 1e3)
    return statistics.median(times)


def section_correctness(args: argparse.Namespace, device: str, budget: Budget) -> list[dict]:
    """(a) the kernels against float64 on the 31B stage shapes (reference computed on the same device)."""
    import torch

    from replknet.ops.triton_check import compare_with_float64
    from replknet.ops.triton_dwconv import triton_dwconv2d

    shapes = [(4, 8, 7)] if args.smoke else STAGES_31B
    dtypes = ("float32", "bfloat16") if args.smoke else DTYPES
    batch = 1 if args.smoke else 2
    rows = []
    for channels, size, kernel_size in shapes:
        for dtype in dtypes:
            for channels_last in (False, True):
                row: dict[str, Any] = {"C": channels, "H": size, "K": kernel_size, "dtype": dtype}
                row["layout"] = "channels_last" if channels_last else "nchw"
                if budget.exhausted():
                    row["error"] = "skipped: time budget"
                else:
                    try:
                        result = compare_with_float64(
                            triton_dwconv2d,
                            (batch, channels, size, size),
                            kernel_size,
                            getattr(torch, dtype),
                            channels_last=channels_last,
                            device=device,
                        )
                        errors = [result[k] for k in ("out", "grad_input", "grad_weight", "grad_bias")]
                        result["ok"] = bool(
                            max(errors) <= result["tolerance"] and result["layout_kept"] and result["dtypes_kept"]
                        )
                        row.update(result)
                    except Exception as error:
                        row["error"] = repr(error)
                        row["ok"] = False
                rows.append(row)
                print(f"(a) {row}", flush=True)
    return rows


def section_kernel_timing(args: argparse.Namespace, device: str, budget: Budget) -> list[dict]:
    """(b) forward and forward+backward times of cuDNN (NCHW, channels_last) and ours (NCHW, channels_last)."""
    import torch

    from replknet.ops import reference_dwconv2d
    from replknet.ops.triton_dwconv import triton_dwconv2d

    shapes = [(4, 8, 7)] if args.smoke else STAGES_31B
    dtypes = ("float32",) if args.smoke else DTYPES
    batch = 1 if args.smoke else args.batch
    warmup, iters = (1, 1) if args.smoke else (3, 10)
    variants = {
        "cudnn_nchw": (reference_dwconv2d, torch.contiguous_format),
        "cudnn_cl": (reference_dwconv2d, torch.channels_last),
        "ours_nchw": (triton_dwconv2d, torch.contiguous_format),
        "ours_cl": (triton_dwconv2d, torch.channels_last),
    }
    rows = []
    for channels, size, kernel_size in shapes:
        for dtype_name in dtypes:
            dtype = getattr(torch, dtype_name)
            for mode in ("fwd", "fwd+bwd"):
                row: dict[str, Any] = {"C": channels, "H": size, "K": kernel_size, "dtype": dtype_name, "mode": mode}
                for name, (fn, fmt) in variants.items():
                    if budget.exhausted():
                        row[name] = "skipped: time budget"
                        continue
                    try:
                        x = torch.randn(batch, channels, size, size, device=device, dtype=dtype)
                        x = x.contiguous(memory_format=fmt)
                        weight = torch.randn(channels, 1, kernel_size, kernel_size, device=device, dtype=dtype)
                        bias = torch.randn(channels, device=device, dtype=dtype)  # as in the fused models
                        if mode == "fwd":

                            def run(fn=fn, x=x, weight=weight, bias=bias) -> object:
                                with torch.no_grad():
                                    return fn(x, weight, bias)

                        else:
                            x.requires_grad_(True)
                            weight.requires_grad_(True)
                            grad_out = torch.randn_like(x)

                            def run(fn=fn, x=x, weight=weight, bias=bias, grad_out=grad_out) -> object:
                                return torch.autograd.grad(fn(x, weight, bias), (x, weight), grad_out)

                        row[name] = median_ms(run, device, warmup, iters)
                        del x, weight, bias
                    except Exception as error:
                        row[name] = f"error: {error!r}"[:300]
                times = {k: v for k, v in row.items() if k in variants and isinstance(v, float)}
                if {"cudnn_nchw", "ours_nchw"} <= times.keys():
                    row["speedup_nchw"] = times["cudnn_nchw"] / times["ours_nchw"]
                if {"cudnn_cl", "ours_cl"} <= times.keys():
                    row["speedup_cl"] = times["cudnn_cl"] / times["ours_cl"]
                cudnn = [times[k] for k in ("cudnn_nchw", "cudnn_cl") if k in times]
                ours = [times[k] for k in ("ours_nchw", "ours_cl") if k in times]
                if cudnn and ours:
                    row["speedup_best"] = min(cudnn) / min(ours)
                rows.append(row)
                print(f"(b) {row}", flush=True)
                if device == "cuda":
                    torch.cuda.empty_cache()
    return rows


def _depthwise_macs(model: Any, input_size: int, device: str) -> int:
    """MACs of every ``DepthwiseConv2d`` call in one forward pass of one image (what ``dwconv2d`` computes)."""
    import torch

    from replknet.ops import DepthwiseConv2d, impl_override

    total = 0

    def hook(module: Any, inputs: tuple, output: Any) -> None:
        nonlocal total
        total += output.numel() * module.kernel_size[0] * module.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, DepthwiseConv2d)]
    try:
        with torch.no_grad(), impl_override("reference"):
            model(torch.zeros(1, 3, input_size, input_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return total


def _throughput(model: Any, images: Any, device: str, warmup: int, iters: int, budget: Budget) -> float | str:
    """Swin's throughput: eval, no_grad, warm-up passes, then timed passes between synchronisations.

    Two probe passes first (the first triggers any autotuning); the measurement is skipped if, at the second pass's
    speed, it would overrun the budget.
    """
    import torch

    with torch.no_grad():
        model(images)  # absorbs autotuning and the auto rule's first measurements
        _sync(device)
        tic = time.perf_counter()
        model(images)
        _sync(device)
        estimate = (warmup + iters) * (time.perf_counter() - tic)
        if estimate > budget.left():
            return f"skipped: needs ~{estimate:.0f} s, {budget.left():.0f} s left"
        for _ in range(warmup):
            model(images)
        _sync(device)
        tic = time.perf_counter()
        for _ in range(iters):
            model(images)
        _sync(device)
        elapsed = time.perf_counter() - tic
    return iters * images.shape[0] / elapsed


def _profiled_share(model: Any, images: Any, device: str, impl: str) -> dict[str, float]:
    """Share of one forward pass's kernel time spent inside ``dwconv2d`` (profiler, record_function ranges)."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from replknet.ops import impl_override, register_impl
    from replknet.ops.dispatch import _IMPLS

    inner = _IMPLS[impl]
    label = "replknet::dwconv2d"

    def wrapped(x: Any, weight: Any, bias: Any) -> Any:
        with record_function(label):
            return inner(x, weight, bias)

    register_impl(f"_profiled_{impl}", wrapped)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with torch.no_grad(), impl_override(f"_profiled_{impl}"):
        model(images)
        _sync(device)
        with profile(activities=activities) as prof:
            model(images)
            _sync(device)
    events = prof.events()
    if device == "cuda":
        # device-side events (kernels, memcpy/memset) carry the GPU time; the record_function ranges collect the
        # time of the kernels launched inside them
        gpu_events = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        kernel_total = sum(e.time_range.elapsed_us() for e in gpu_events)
        dw_time = sum(e.device_time_total for e in events if e.name == label)
        dw_kernels = sum(
            e.time_range.elapsed_us() for e in gpu_events if "dwconv" in e.name or "depthwise" in e.name.lower()
        )
    else:
        kernel_total = sum(e.self_cpu_time_total for e in events)
        dw_time = sum(e.cpu_time_total for e in events if e.name == label)
        dw_kernels = float("nan")
    return {
        "profiled_share": dw_time / kernel_total if kernel_total else float("nan"),
        "profiled_total_ms": kernel_total / 1e3,
        "kernel_name_share": dw_kernels / kernel_total if kernel_total and dw_kernels == dw_kernels else float("nan"),
    }


def section_models(args: argparse.Namespace, device: str, budget: Budget) -> list[dict]:
    """(c) model throughput with each impl, and the depthwise share of latency vs of MACs."""
    import torch

    import replknet
    from replknet.ops import impl_override, register_impl

    register_impl("_identity", lambda x, weight, bias: x)  # ablation: the model without its depthwise convs
    models = ["replknet_tiny"] if args.smoke else [m for m in args.models.split(",") if m]
    resolutions = [64] if args.smoke else [int(r) for r in args.resolutions.split(",")]
    batch = 1 if args.smoke else args.batch
    warmup, iters = (1, 1) if args.smoke else (args.warmup, args.iters)
    # NOTE: the smoke run keeps Triton out of whole models: the interpreter would take hours on 31x31 kernels.
    impls = ["reference", "auto"] if args.smoke else ["reference", "triton", "auto"]
    rows = []
    for model_name in models:
        for size in resolutions:
            row: dict[str, Any] = {"model": model_name, "res": size, "batch": batch, "dtype": "float32"}
            rows.append(row)
            if budget.exhausted():
                row["error"] = "skipped: time budget"
                continue
            try:
                model = replknet.create_model(model_name, num_classes=1000)
                model = replknet.reparameterize(model).eval().to(device)
                total_macs = replknet.count_macs(model, size)
                dw_macs = _depthwise_macs(model, size, device)
                row["gmacs"] = total_macs / 1e9
                row["dw_mac_share"] = dw_macs / total_macs
                images = torch.randn(batch, 3, size, size, device=device)
                for impl in impls:
                    if budget.exhausted():
                        row[f"{impl}_img_s"] = "skipped: time budget"
                        continue
                    try:
                        with impl_override(impl):
                            row[f"{impl}_img_s"] = _throughput(model, images, device, warmup, iters, budget)
                    except Exception as error:
                        row[f"{impl}_img_s"] = f"error: {error!r}"[:300]
                if model_name in ("replknet_31b", "replknet_tiny") and not budget.exhausted():
                    with impl_override("_identity"):
                        no_dw = _throughput(model, images, device, max(1, warmup // 5), iters, budget)
                    row["no_dw_img_s"] = no_dw
                    for impl in ["reference"] if args.smoke else ["reference", "triton"]:
                        value = row.get(f"{impl}_img_s")
                        if isinstance(value, float) and isinstance(no_dw, float):
                            row[f"{impl}_ablation_share"] = 1.0 - value / no_dw
                        try:
                            profiled = _profiled_share(model, images, device, impl)
                            row.update({f"{impl}_{k}": v for k, v in profiled.items()})
                        except Exception as error:
                            row[f"{impl}_profiled_share"] = f"error: {error!r}"[:300]
                del model, images
                if device == "cuda":
                    torch.cuda.empty_cache()
            except Exception as error:
                row["error"] = repr(error)[:500]
                traceback.print_exc()
            print(f"(c) {row}", flush=True)
    return rows


def _fmt(value: Any, spec: str = ".3g") -> str:
    if isinstance(value, float):
        return format(value, spec)
    return "-" if value is None else str(value)[:24]


def print_tables(results: dict) -> None:
    """The side-by-side summary: correctness, kernel times with ratios, model throughput and shares."""
    correctness = results.get("correctness") or []
    if correctness:
        print("\n(a) Triton vs float64: max relative error over out/grad_input/grad_weight/grad_bias")
        print(f"{'C':>5} {'H':>3} {'K':>3} {'dtype':>9} {'layout':>13} {'max rel err':>12} {'tol':>8} ok")
        for row in correctness:
            errors = [row.get(k) for k in ("out", "grad_input", "grad_weight", "grad_bias")]
            worst = max((e for e in errors if isinstance(e, float)), default=row.get("error"))
            print(
                f"{row['C']:>5} {row['H']:>3} {row['K']:>3} {row['dtype']:>9} {row['layout']:>13} "
                f"{_fmt(worst):>12} {_fmt(row.get('tolerance')):>8} {row.get('ok')}"
            )
    timing = results.get("kernel_timing") or []
    if timing:
        print("\n(b) depthwise conv, ms (median of CUDA-event timings); speedup = cuDNN time / ours")
        header = f"{'C':>5} {'H':>3} {'K':>3} {'dtype':>9} {'mode':>8}"
        header += f" {'cudnn_nchw':>10} {'cudnn_cl':>10} {'ours_nchw':>10} {'ours_cl':>10} {'x nchw':>7} {'x cl':>7}"
        print(header + f" {'x best':>7}")
        for row in timing:
            print(
                f"{row['C']:>5} {row['H']:>3} {row['K']:>3} {row['dtype']:>9} {row['mode']:>8}"
                + "".join(f" {_fmt(row.get(k)):>10}" for k in ("cudnn_nchw", "cudnn_cl", "ours_nchw", "ours_cl"))
                + "".join(f" {_fmt(row.get(k), '.2f'):>7}" for k in ("speedup_nchw", "speedup_cl", "speedup_best"))
            )
    models = results.get("models") or []
    if models:
        print("\n(c) throughput, images/s (fused model, fp32, eval, no_grad); depthwise share of latency vs of MACs")
        print(
            f"{'model':>14} {'res':>4} {'reference':>10} {'triton':>10} {'auto':>10} {'x triton':>8} "
            f"{'dw MACs':>8} {'ref share':>9} {'ours share':>10} {'ref abl.':>8} {'ours abl.':>9}"
        )
        for row in models:
            ref, tri = row.get("reference_img_s"), row.get("triton_img_s")
            ratio = tri / ref if isinstance(ref, float) and isinstance(tri, float) else None
            print(
                f"{row['model']:>14} {row['res']:>4} {_fmt(row.get('reference_img_s'), '.1f'):>10} "
                f"{_fmt(row.get('triton_img_s'), '.1f'):>10} {_fmt(row.get('auto_img_s'), '.1f'):>10} "
                f"{_fmt(ratio, '.2f'):>8} {_fmt(row.get('dw_mac_share'), '.1%'):>8} "
                f"{_fmt(row.get('reference_profiled_share'), '.1%'):>9} "
                f"{_fmt(row.get('triton_profiled_share'), '.1%'):>10} "
                f"{_fmt(row.get('reference_ablation_share'), '.1%'):>8} "
                f"{_fmt(row.get('triton_ablation_share'), '.1%'):>9}" + (f"  {row['error']}" if "error" in row else "")
            )
    for name, error in (results.get("section_errors") or {}).items():
        print(f"section {name} failed: {error}")


def _write_json(path: str, results: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as handle:
        json.dump(results, handle, indent=1, default=str)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.smoke:
        # NOTE: must be set before triton is imported (replknet's imports pull it in), so before importing torch.
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import torch

    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    results: dict[str, Any] = {
        "argv": sys.argv,
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        "smoke": args.smoke,
        "section_errors": {},
    }
    if device == "cpu" and not args.smoke:
        print("no CUDA device: nothing to measure (the GPU check needs a GPU; --smoke tests the script on the CPU)")
        results["status"] = "no-cuda"
        _write_json(args.out, results)
        return 0
    try:
        import triton

        results["triton"] = triton.__version__
    except Exception as error:
        results["triton"] = f"unavailable: {error!r}"
    if device == "cuda":
        results["cuda"] = torch.version.cuda
        results["cudnn"] = torch.backends.cudnn.version()
    budget = Budget(args.budget_s)
    sections = {
        "a": ("correctness", section_correctness),
        "b": ("kernel_timing", section_kernel_timing),
        "c": ("models", section_models),
    }
    for letter in args.sections.split(","):
        name, fn = sections[letter.strip()]
        tic = time.perf_counter()
        try:
            results[name] = fn(args, device, budget)
        except Exception as error:
            traceback.print_exc()
            results["section_errors"][name] = repr(error)
        results[f"{name}_seconds"] = time.perf_counter() - tic
        _write_json(args.out, results)  # keep what we have if a later section hangs or the run is killed
    try:
        from replknet.ops.triton_dwconv import auto_decisions

        results["auto_decisions"] = [vars(d) | {"key": list(d.key)} for d in auto_decisions()]
    except Exception as error:
        results["section_errors"]["auto_decisions"] = repr(error)
    results["status"] = "done"
    _write_json(args.out, results)
    print_tables(results)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
