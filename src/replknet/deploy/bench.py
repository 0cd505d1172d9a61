"""Throughput benchmark in the paper's manner, RepLKNet next to its timm peers.

The official repository has no throughput script; its maintainer points to Swin's ``throughput()`` (official
issue #17): eval mode, ``no_grad``, one random batch (64), 50 warm-up forwards, ``cuda.synchronize()``, then 30
timed forwards, images/s = iterations x batch / elapsed. This module does the same, for the training form, the
fused form and (beyond the paper) the deep-fused form, in fp32 and bf16 (autocast), on CPU or GPU.

NOTE: on a CPU the paper's counts take hours (a batch-64 RepLKNet-31B forward takes seconds on a few cores), so
there the timed forwards run for a time budget instead (``budget``): as many as fit in it, at least two.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

_logger = logging.getLogger(__name__)

PEERS = ("swin_base_patch4_window7_224", "convnext_base", "resnet101", "resnet152")
DEFAULT_MODELS = ("replknet_31b", *PEERS)
# train: as built; fused: the official structural re-parameterisation (small kernels merged);
# deep: fused and every BN folded into its conv (this library's `reparameterize(deep=True)`).
FORMS = ("train", "fused", "deep")
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class BenchResult:
    """One measured configuration. ``form`` is ``-`` for models that have no fused form (measured as built)."""

    model: str
    form: str
    dtype: str
    device: str
    batch_size: int
    image_size: int
    params: int
    gmacs: float
    images_per_second: float
    ms_per_batch: float
    threads: int

    def to_dict(self) -> dict:
        return asdict(self)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure_throughput(
    model: nn.Module,
    batch_size: int = 64,
    image_size: int = 224,
    warmup: int = 50,
    iterations: int = 30,
    device: str | torch.device = "cpu",
    dtype: str = "fp32",
    channels_last: bool = False,
    budget: float | None = None,
) -> tuple[float, float]:
    """``(images/s, ms per batch)`` of eval-mode forwards on one random batch (Swin's ``throughput()`` method).

    Args:
        model: the model (moved to ``device``, put in eval mode).
        batch_size: images per forward (the paper: 64).
        image_size: square input resolution.
        warmup: untimed forwards first (the paper: 50).
        iterations: timed forwards (the paper: 30); with ``budget``, at most this many.
        device: ``"cpu"`` or ``"cuda"``; CUDA is synchronised before and after the timed loop.
        dtype: ``"fp32"``, or ``"bf16"`` / ``"fp16"`` under ``torch.autocast``.
        channels_last: run in channels-last memory format.
        budget: seconds of timed forwards: they stop once this much time has passed (at least two are timed).
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    if budget is not None and not budget > 0:
        raise ValueError(f"budget must be a positive number of seconds, got {budget}")
    if batch_size < 1 or iterations < 1 or warmup < 0:
        raise ValueError(
            f"need batch_size >= 1, iterations >= 1, warmup >= 0; got {batch_size}, {iterations}, {warmup}"
        )
    device = torch.device(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.eval().to(device=device, memory_format=memory_format)
    in_chans = getattr(model, "in_chans", 3)
    x = torch.randn(batch_size, in_chans, image_size, image_size, device=device).to(memory_format=memory_format)
    autocast_dtype = DTYPES[dtype]
    with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        for _ in range(warmup):
            model(x)
        _synchronize(device)
        start = time.perf_counter()
        done = 0
        while done < iterations:
            model(x)
            done += 1
            if budget is not None and done >= 2:
                _synchronize(device)
                if time.perf_counter() - start >= budget:
                    break
        _synchronize(device)
        elapsed = time.perf_counter() - start
    return done * batch_size / elapsed, 1000 * elapsed / done


def device_description(device: str | torch.device) -> str:
    """A readable name of the device: the GPU's name, or the CPU model and thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            name = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name}, {torch.get_num_threads()} threads"


def build_bench_model(name: str | nn.Module, form: str = "train", image_size: int = 224) -> nn.Module | None:
    """The model ``name`` (or a copy of a given model) in ``form`` (eval), or None when it has no such form."""
    import copy

    import replknet
    from replknet.models._registry import family_of

    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; choose from {', '.join(FORMS)}")
    if isinstance(name, nn.Module):
        family = family_of(name)
        if (family is None or not family.fusible) and form != "train":
            return None
        model = copy.deepcopy(name).eval()
        return replknet.reparameterize(model, inplace=True, deep=form == "deep") if form != "train" else model
    info = replknet.find_model_info(name)
    if (info is None or not info.fusible) and form != "train":
        return None
    model = replknet.create_model(name).eval()
    fixed = model.pretrained_cfg.get("fixed_input_size", False)
    if fixed and tuple(model.pretrained_cfg["input_size"][-2:]) != (image_size, image_size):
        model = replknet.create_model(name, img_size=image_size).eval()  # Swin: windows built for one resolution
    if form != "train":
        model = replknet.reparameterize(model, inplace=True, deep=form == "deep")
    return model


def bench_entries(models: Sequence[str | nn.Module], forms: Sequence[str], dtypes: Sequence[str]) -> int:
    """How many measurements ``benchmark`` makes (models without a fused form are measured once per dtype)."""
    from replknet.models import find_model_info
    from replknet.models._registry import family_of

    count = 0
    for name in models:
        family = family_of(name) if isinstance(name, nn.Module) else getattr(find_model_info(name), "family", None)
        count += (len(forms) if family is not None and family.fusible else 1) * len(dtypes)
    return count


def benchmark(
    models: Sequence[str | nn.Module] = DEFAULT_MODELS,
    forms: Sequence[str] = ("train", "fused"),
    dtypes: Sequence[str] = ("fp32", "bf16"),
    batch_size: int = 64,
    image_size: int = 224,
    warmup: int = 50,
    iterations: int = 30,
    device: str = "cpu",
    channels_last: bool = False,
    on_result: Callable[[BenchResult], None] | None = None,
    budget: float | None = None,
    on_start: Callable[[str, str, str], None] | None = None,
) -> list[BenchResult]:
    """Params, MACs and throughput of each model x form x dtype; models without a fused form run once, as built.

    ``models`` are registered or timm names, or models (a run's, with its weights: measured as they are).
    ``budget`` times forwards for that many seconds per measurement instead of ``iterations`` of them
    (``measure_throughput``). ``on_start(model, form, dtype)`` and ``on_result(result)`` are called before and
    after each measurement (the CLI shows progress with them).
    """
    from replknet import count_macs, count_params

    for dtype in dtypes:
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device cuda requested but CUDA is not available")
    from replknet.models import find_model_info
    from replknet.models._registry import family_of

    results: list[BenchResult] = []
    for name in models:
        # Models without a fused form (the timm peers) are measured once, as built, whatever ``forms`` says.
        if isinstance(name, nn.Module):
            label, family = name.pretrained_cfg.get("architecture", type(name).__name__), family_of(name)
        else:
            label, family = name, getattr(find_model_info(name), "family", None)
        model_forms = forms if family is not None and family.fusible else ("-",)
        for form in model_forms:
            model = build_bench_model(name, "train" if form == "-" else form, image_size)
            params = count_params(model)
            gmacs = count_macs(model, image_size) / 1e9
            for dtype in dtypes:
                if on_start is not None:
                    on_start(label, form, dtype)
                speed, ms = measure_throughput(
                    model, batch_size, image_size, warmup, iterations, device, dtype, channels_last, budget
                )
                result = BenchResult(
                    label,
                    form,
                    dtype,
                    str(device),
                    batch_size,
                    image_size,
                    params,
                    gmacs,
                    speed,
                    ms,
                    torch.get_num_threads(),
                )
                _logger.info("%s %s %s: %.1f images/s", label, form, dtype, speed)
                results.append(result)
                if on_result is not None:
                    on_result(result)
            del model
            gc.collect()
            if torch.device(device).type == "cuda":
                torch.cuda.empty_cache()
    return results


def format_table(results: Sequence[BenchResult], baseline: str | None = "swin_base_patch4_window7_224") -> str:
    """A plain-text table; ``vs <baseline>`` is the throughput ratio to the baseline model at the same dtype."""
    baseline_speed = {r.dtype: r.images_per_second for r in results if baseline is not None and r.model == baseline}
    ratio_header = f"vs {baseline}" if baseline_speed else ""
    header = f"{'model':<30} {'form':<6} {'dtype':<5} {'params (M)':>10} {'GMACs':>7} {'img/s':>9} {'ms/batch':>9}"
    lines = [header + (f"  {ratio_header}" if ratio_header else ""), "-" * (len(header) + len(ratio_header) + 2)]
    for r in results:
        line = (
            f"{r.model:<30} {r.form:<6} {r.dtype:<5} {r.params / 1e6:>10.2f} {r.gmacs:>7.2f} "
            f"{r.images_per_second:>9.2f} {r.ms_per_batch:>9.1f}"
        )
        if r.dtype in baseline_speed:
            line += f"  {r.images_per_second / baseline_speed[r.dtype]:.2f}x"
        lines.append(line)
    return "\n".join(lines)


__all__ = [
    "DEFAULT_MODELS",
    "DTYPES",
    "FORMS",
    "PEERS",
    "BenchResult",
    "bench_entries",
    "benchmark",
    "build_bench_model",
    "device_description",
    "format_table",
    "measure_throughput",
]
