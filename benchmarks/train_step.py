"""One training step (or one inference forward) of RepLKNet-31B next to Swin-B and ConvNeXt-B on the CPU.

Every model is built once and timed in alternating rounds (one step of each model per round, medians over rounds),
so load that comes and goes on a shared machine falls on all of them alike. Configurations (224x224, random
weights, the same data for every model):

- ``ours``: RepLKNet-31B with ``replknet.ops`` (``impl="auto"``), NCHW model and input.
- ``ours_cl``: the same in channels_last.
- ``conv2d`` / ``conv2d_cl``: the same model with every depthwise layer run as a plain ``nn.Conv2d`` would
  (``impl="reference"``, ``F.conv2d``): what the official code runs, NCHW (as shipped) and channels_last.
- ``free`` / ``free_cl``: the bound. Every depthwise layer replaced by a per-channel scale (one pass over memory,
  ``benchmarks/model_speed.py``'s ``dw free``): RepLKNet-31B if its depthwise convolutions cost nothing. Where ours
  trails a peer, ``free`` says whether any depthwise implementation could close the gap (Amdahl's law).
- ``swin``: ``swin_base_patch4_window7_224`` (timm), NCHW input.
- ``convnext`` / ``convnext_cl``: ``convnext_base`` (timm), NCHW and channels_last.

Task ``train``: forward, cross-entropy, backward, SGD step (momentum 0.9), ``zero_grad``; training form. Task
``infer``: eval forward under ``no_grad``; RepLKNet in deploy form (``replknet.reparameterize(deep=True)``).
Precision ``fp32``, or ``bf16``: ``torch.autocast("cpu", dtype=torch.bfloat16)`` around the forward (parameters
and optimizer stay fp32, as in mixed-precision training). ``replknet.runtime.keep_freed_memory()`` is on for every
model unless ``--system-allocator`` is given. The header prints the CPU model and the flags that decide which
kernels oneDNN and MKL can use (AVX-512, AVX512-BF16, AMX).

    python benchmarks/train_step.py                                  # B = 8, fp32 and bf16, every config
    python benchmarks/train_step.py --batch-sizes 32 --configs ours_cl free_cl swin convnext_cl
    python benchmarks/train_step.py --task infer --batch-sizes 1 8 --dtypes bf16
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import time

import torch
import torch.nn.functional as F

from model_speed import FREE_IMPL, free_dwconv2d

CONFIGS = ("ours", "ours_cl", "conv2d", "conv2d_cl", "free", "free_cl", "swin", "convnext", "convnext_cl")
PEER_MODELS = {"swin": "swin_base_patch4_window7_224", "convnext": "convnext_base"}
DEPTHWISE_IMPL = {"ours": "auto", "conv2d": "reference", "free": FREE_IMPL}
# CPU flags that decide the kernels: AVX-512 (fp32 GEMMs), AVX512-BF16 (bf16 dot products), AMX (bf16 tiles)
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "avx_vnni")


def cpu_header() -> str:
    """The CPU model, its kernel-relevant flags, torch's CPU capability and library versions."""
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    present = [flag for flag in KERNEL_FLAGS if flag in flags]
    onednn = re.search(r"MKL-DNN v([\d.]+)", torch.__config__.show())
    return (
        f"{model}; flags: {' '.join(present) or 'none of ' + ' '.join(KERNEL_FLAGS)}; torch {torch.__version__} "
        f"({torch.backends.cpu.get_cpu_capability()}, oneDNN {onednn.group(1) if onednn else '?'}), "
        f"{torch.get_num_threads()} threads"
    )


def build(config: str, task: str) -> torch.nn.Module:
    """The model of ``config`` in training form (``train``) or eval/deploy form (``infer``), in its memory format."""
    import replknet
    from replknet.testing import randomize_bn_stats

    base = config.removesuffix("_cl")
    torch.manual_seed(0)
    if base in PEER_MODELS:
        model = replknet.create_model(PEER_MODELS[base], num_classes=1000)
    else:
        model = randomize_bn_stats(replknet.create_model("replknet_31b", num_classes=1000))
    if task == "infer":
        model.eval()
        if base not in PEER_MODELS:
            model = replknet.reparameterize(model, deep=True)
    if config.endswith("_cl"):
        model = model.to(memory_format=torch.channels_last)
    return model


class Runner:
    """One model and its step (train or infer) at one batch size, both precisions."""

    def __init__(self, config: str, task: str, batch: int) -> None:
        self.config, self.task, self.batch = config, task, batch
        self.model = build(config, task)
        memory_format = torch.channels_last if config.endswith("_cl") else torch.contiguous_format
        generator = torch.Generator().manual_seed(1)
        self.x = torch.randn(batch, 3, 224, 224, generator=generator).contiguous(memory_format=memory_format)
        self.target = torch.randint(0, 1000, (batch,), generator=generator)
        self.impl = DEPTHWISE_IMPL.get(config.removesuffix("_cl"))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-4, momentum=0.9) if task == "train" else None

    def step(self, dtype: str) -> tuple[float, float]:
        """Wall-clock and process CPU seconds for one step."""
        from replknet.ops import impl_override

        override = impl_override(self.impl) if self.impl is not None else contextlib.nullcontext()
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16")
        start, start_cpu = time.perf_counter(), time.process_time()
        if self.task == "infer":
            with torch.no_grad(), override, autocast:
                self.model(self.x)
        else:
            with override, autocast:
                loss = F.cross_entropy(self.model(self.x), self.target)
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start, time.process_time() - start_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--task", default="train", choices=("train", "infer"))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"))
    parser.add_argument("--rounds", type=int, default=3, help="timed steps per (model, dtype), one per round")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument(
        "--system-allocator", action="store_true", help="do not call replknet.runtime.keep_freed_memory()"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from replknet.ops import register_impl
    from replknet.runtime import benchmark_allocator

    allocator = benchmark_allocator(args.system_allocator)
    register_impl(FREE_IMPL, free_dwconv2d)
    print(cpu_header())
    print(
        f"task {args.task}, 224x224, allocator: {allocator}, {args.rounds} rounds after one warm-up step; "
        "images/s = batch / median step time\n"
    )
    for batch in args.batch_sizes:
        runners = [Runner(config, args.task, batch) for config in args.configs]
        times = {(r.config, dtype): [] for r in runners for dtype in args.dtypes}
        cpu_times = {key: [] for key in times}
        for dtype in args.dtypes:
            for runner in runners:  # warm-up: oneDNN primitives, FFT plans, optimizer state
                runner.step(dtype)
        for round_index in range(args.rounds):
            for dtype in args.dtypes:
                for runner in runners:
                    seconds, cpu_seconds = runner.step(dtype)
                    times[(runner.config, dtype)].append(seconds)
                    cpu_times[(runner.config, dtype)].append(cpu_seconds)
                    print(
                        f"  B={batch} round {round_index + 1} {dtype} {runner.config}: {seconds:.3f} s "
                        f"(CPU {cpu_seconds:.3f} s)",
                        flush=True,
                    )
        speed = {key: batch / statistics.median(values) for key, values in times.items()}
        cpu_speed = {key: batch / statistics.median(values) for key, values in cpu_times.items()}
        print(
            f"\n{args.task}, B={batch}: images/s (median of {args.rounds}; per-round values) and images per CPU-second "
            "(process CPU time: the steadier figure on a shared machine with one thread; with more it counts waits)"
        )
        for dtype in args.dtypes:
            for config in args.configs:
                rounds = " ".join(f"{batch / t:.2f}" for t in times[(config, dtype)])
                line = f"  {dtype:<5} {config:<12} {speed[(config, dtype)]:8.3f}   ({rounds})"
                line += f"   per CPU-s {cpu_speed[(config, dtype)]:7.3f}"
                if dtype == "bf16" and (config, "fp32") in speed:
                    line += f"   bf16/fp32 x{speed[(config, dtype)] / speed[(config, 'fp32')]:.2f}"
                    line += f" (CPU x{cpu_speed[(config, dtype)] / cpu_speed[(config, 'fp32')]:.2f})"
                print(line)
        peers = [c for c in args.configs if c.removesuffix("_cl") in PEER_MODELS]
        print(f"\n{args.task}, B={batch}: RepLKNet-31B configurations against each peer (images/s ratio; per CPU-s)")
        for dtype in args.dtypes:
            for config in args.configs:
                if config in peers:
                    continue
                ratios = ", ".join(
                    f"x{speed[(config, dtype)] / speed[(p, dtype)]:.2f} "
                    f"({cpu_speed[(config, dtype)] / cpu_speed[(p, dtype)]:.2f}) {p}"
                    for p in peers
                )
                print(f"  {dtype:<5} {config:<12} {ratios}")
        print(flush=True)
        del runners


if __name__ == "__main__":
    main()
