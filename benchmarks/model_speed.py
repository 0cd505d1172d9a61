"""RepLKNet-31B at 224 on CPU: our depthwise op against the same model on plain ``nn.Conv2d`` layers.

Configurations (same weights, same input):

- ``nn.Conv2d NCHW``: every depthwise layer forced to ``impl="reference"`` (``F.conv2d``, as a plain
  ``nn.Conv2d`` model runs), NCHW model and input.
- ``native CL``: ``impl="reference"`` with the model and input in channels_last (oneDNN's channels_last path).
- ``ours``: ``impl="auto"`` (``replknet.ops`` picks per layer), NCHW model and input.
- ``ours CL``: ``ours`` with the model and input in channels_last (the other layers' preferred layout on CPU).
- ``ours bf16``: ``ours`` under ``torch.autocast("cpu", dtype=torch.bfloat16)``.
- ``dw free``: the bound. Every depthwise layer replaced by a per-channel scale (its kernel's centre tap), which
  costs one pass over memory: the images/s of the model if its depthwise convolutions took no time. Its ratio
  to ``nn.Conv2d NCHW`` is the largest speed-up any depthwise implementation could give this model here
  (Amdahl's law); the rest of the network is the same code in every configuration.

Tasks: inference in deploy form (``replknet.reparameterize(deep=True)``) at B=1 and B=8, and a full train step (forward,
backward, AdamW step) at B=8. Each (configuration, task) runs in a fresh subprocess so its peak resident memory
(``ru_maxrss``) is its own. Inference also reports, as in the paper's Table 1, the share of forward latency spent
in the depthwise large-kernel convolutions (K >= 13, timed with forward hooks) next to their share of FLOPs.
Every worker runs with ``replknet.runtime.keep_freed_memory()`` (as the ``replknet`` command does) unless
``--system-allocator`` is given.

    python benchmarks/model_speed.py                # everything (slow: the baselines take minutes)
    python benchmarks/model_speed.py --tasks train8 --configs ours native_cl
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

CONFIGS = ("nchw", "native_cl", "ours", "ours_cl", "ours_bf16", "dw_free")
CONFIG_NAMES = {
    "nchw": "nn.Conv2d NCHW",
    "native_cl": "native CL",
    "ours": "ours",
    "ours_cl": "ours CL",
    "ours_bf16": "ours bf16",
    "dw_free": "dw free",
}
FREE_IMPL = "_free_bound"


def free_dwconv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Not a convolution: a per-channel scale by the kernel's centre tap, the cheapest op with its shapes.

    In ``x``'s dtype, as the convolution's output would be (under bf16 autocast the next layer sees bf16).
    """
    centre = weight.shape[-1] // 2
    y = x * weight[:, 0, centre, centre].to(x.dtype).view(1, -1, 1, 1)
    return y if bias is None else y + bias.to(x.dtype).view(1, -1, 1, 1)


TASKS = ("infer1", "infer8", "train8")
LARGE_KERNEL = 13


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class DepthwiseTimer:
    """Forward hooks on every large-kernel ``DepthwiseConv2d``: time spent in them and their nominal FLOPs."""

    def __init__(self, model: torch.nn.Module) -> None:
        from replknet.ops import DepthwiseConv2d

        self.seconds = 0.0
        self.flops = 0
        self.handles = []
        for module in model.modules():
            if isinstance(module, DepthwiseConv2d) and module.kernel_size[0] >= LARGE_KERNEL:
                self.handles.append(module.register_forward_pre_hook(self._start))
                self.handles.append(module.register_forward_hook(self._stop))

    def _start(self, module, inputs) -> None:
        self._t0 = time.perf_counter()

    def _stop(self, module, inputs, output) -> None:
        self.seconds += time.perf_counter() - self._t0
        batch, channels, height, width = output.shape
        self.flops += 2 * batch * channels * height * width * module.kernel_size[0] ** 2

    def reset(self) -> None:
        self.seconds, self.flops = 0.0, 0


def worker(config: str, task: str, repeats: int) -> dict:
    import replknet
    from replknet.ops import impl_override, register_impl
    from replknet.testing import randomize_bn_stats, relative_error

    torch.manual_seed(0)
    model = replknet.create_model("replknet_31b", num_classes=1000)
    randomize_bn_stats(model)
    batch = int(task[-1])
    x = torch.randn(batch, 3, 224, 224)
    if task.startswith("infer"):
        model = replknet.reparameterize(model.eval(), deep=True)
    if config in ("native_cl", "ours_cl"):
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    impl = {"nchw": "reference", "native_cl": "reference", "dw_free": FREE_IMPL}.get(config, "auto")
    register_impl(FREE_IMPL, free_dwconv2d)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if config == "ours_bf16" else contextlib.nullcontext()
    result: dict = {"config": config, "task": task, "batch": batch}

    if task.startswith("infer"):
        timer = DepthwiseTimer(model)

        def step() -> torch.Tensor:
            with torch.no_grad(), impl_override(impl), autocast:
                return model(x)

    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        target = torch.randint(0, 1000, (batch,))
        timer = None

        def step() -> torch.Tensor:
            with impl_override(impl), autocast:
                loss = torch.nn.functional.cross_entropy(model(x), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss

    result["rss_before_mib"] = _rss_mib()
    start = time.perf_counter()
    output = step()  # warm-up (oneDNN primitive creation, FFT plans, AdamW state)
    first = time.perf_counter() - start
    repeats = 1 if first > 20 else repeats
    times, shares = [], []
    for _ in range(repeats):
        if timer is not None:
            timer.reset()
        start = time.perf_counter()
        output = step()
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        if timer is not None:
            shares.append(timer.seconds / elapsed)
    seconds = statistics.median(times)
    result.update(seconds=seconds, images_per_s=batch / seconds, peak_rss_mib=_peak_rss_mib(), repeats=repeats)
    if timer is not None:
        dw_flops = timer.flops  # of the last timed forward; read before count_macs runs the model again
        total_flops = 2 * replknet.count_macs(model) * batch
        result.update(dw_latency_share=statistics.median(shares), dw_flop_share=dw_flops / total_flops)
    if config == "ours_bf16" and task.startswith("infer"):
        with torch.no_grad(), impl_override("reference"):
            reference = model(x)
        result["bf16_rel_error"] = relative_error(output.float(), reference)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument(
        "--system-allocator", action="store_true", help="do not call replknet.runtime.keep_freed_memory()"
    )
    parser.add_argument("--worker", nargs=2, metavar=("CONFIG", "TASK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from replknet.runtime import benchmark_allocator

    allocator = benchmark_allocator(args.system_allocator)
    if args.worker:
        print(json.dumps(worker(*args.worker, args.repeats)))
        return

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}, "
        f"allocator: {allocator}"
    )
    print("RepLKNet-31B, 224x224, random weights; inference in deploy form; each row a fresh process\n")
    results: dict[tuple[str, str], dict] = {}
    for task in args.tasks:
        for config in args.configs:
            command = [sys.executable, __file__, "--worker", config, task, "--repeats", str(args.repeats)]
            if args.threads:
                command += ["--threads", str(args.threads)]
            if args.system_allocator:
                command.append("--system-allocator")
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(f"{task} {config}: failed\n{done.stderr[-2000:]}", flush=True)
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            results[(task, config)] = result
            line = (
                f"{task:>6} {CONFIG_NAMES[config]:>15}: {result['images_per_s']:8.2f} img/s "
                f"({result['seconds'] * 1e3:9.1f} ms, n={result['repeats']}), peak RSS {result['peak_rss_mib']:7.0f} MiB"
            )
            if "dw_latency_share" in result:
                line += (
                    f", depthwise K>={LARGE_KERNEL}: {100 * result['dw_latency_share']:5.1f}% of latency, "
                    f"{100 * result['dw_flop_share']:4.1f}% of FLOPs "
                    f"(ratio {result['dw_latency_share'] / result['dw_flop_share']:.2f})"
                )
            if "bf16_rel_error" in result:
                line += f", bf16 vs fp32 logits rel. error {result['bf16_rel_error']:.2e}"
            print(line, flush=True)

    print("\nSpeed-up of ours (images/s ratio) and train-step peak memory ratio")
    for task in args.tasks:
        for config in ("ours", "ours_cl", "ours_bf16"):
            if (task, config) not in results:
                continue
            ours = results[(task, config)]
            parts = []
            for baseline in ("nchw", "native_cl"):
                if (task, baseline) in results:
                    ratio = ours["images_per_s"] / results[(task, baseline)]["images_per_s"]
                    parts.append(f"x{ratio:.1f} vs {CONFIG_NAMES[baseline]}")
            if config == "ours_bf16" and (task, "ours") in results:
                parts.append(f"x{ours['images_per_s'] / results[(task, 'ours')]['images_per_s']:.2f} vs ours fp32")
            if task.startswith("train") and (task, "native_cl") in results:
                memory = ours["peak_rss_mib"] / results[(task, "native_cl")]["peak_rss_mib"]
                parts.append(f"peak RSS {memory:.2f}x native CL")
            print(f"  {task:>6} {CONFIG_NAMES[config]:>10}: " + ", ".join(parts))
        if (task, "dw_free") in results and (task, "nchw") in results:
            bound = results[(task, "dw_free")]["images_per_s"] / results[(task, "nchw")]["images_per_s"]
            print(f"  {task:>6} {'bound':>10}: x{bound:.1f} vs nn.Conv2d NCHW with depthwise layers that cost nothing")


if __name__ == "__main__":
    main()
