"""Process-level CPU settings that make PyTorch models faster: the allocator.

PyTorch's CPU tensors come from ``malloc``. glibc serves blocks above its mmap threshold (128 KiB by default,
at most 32 MiB) with a fresh ``mmap`` and returns them to the system on ``free``, so every large activation
of a CNN costs one page fault per 4 KiB page, every time it is allocated. On a VM those faults are dear: on
the project's 2-core machine ``torch.relu`` on a 51 MB tensor took 92 ms allocating its output against 25 ms
writing into an existing one (measured ad hoc; tests/test_runtime.py counts the faults: ~16k per 64 MiB), and at batch 8 deep-fused RepLKNet-31B inference ran 1.14x (Swin-B 1.24x) faster
once the memory was kept (docs/benchmarks.md). This is the problem jemalloc/tcmalloc solve when preloaded
(``python -m torch.backends.xeon.run_cpu`` does that); ``keep_freed_memory`` gets the same effect from glibc
itself, at run time, without a preload.

It changes the whole process (every later allocation, not only this library's), so the library never calls it
on import: the ``replknet`` command and the benchmark scripts call it, and so can a user's own script.
Set ``REPLKNET_KEEP_FREED_MEMORY=0`` to turn it off for the commands.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

_logger = logging.getLogger(__name__)

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1
_TOP_PAD_BYTES = 64 << 20

ENV_VAR = "REPLKNET_KEEP_FREED_MEMORY"
_applied = False


def _glibc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def keep_freed_memory(respect_env: bool = False) -> bool:
    """Make glibc keep freed memory for reuse instead of unmapping it (large tensors stop page-faulting).

    Sets ``M_MMAP_MAX=0`` (large blocks come from the heap, not fresh mappings), ``M_TRIM_THRESHOLD`` to its
    maximum (freed memory is not handed back to the system) and a 64 MiB ``M_TOP_PAD``. The process's resident
    memory then stays at its peak instead of shrinking between batches, as it would with jemalloc or PyTorch's
    CUDA caching allocator. Idempotent.

    Args:
        respect_env: do nothing when the environment variable ``REPLKNET_KEEP_FREED_MEMORY`` is ``0``
            (what the ``replknet`` command passes).

    Returns:
        True if the settings are in effect; False on platforms without glibc (macOS, Windows, musl) or when
        turned off through the environment.
    """
    global _applied
    if respect_env and os.environ.get(ENV_VAR, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if _applied:
        return True
    libc = _glibc()
    if libc is None:
        _logger.debug("keep_freed_memory: not a glibc platform, allocator left as it is")
        return False
    # every setting is tried (a list, not a short-circuiting generator), then checked
    results = [
        libc.mallopt(param, value)
        for param, value in ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _INT_MAX), (_M_TOP_PAD, _TOP_PAD_BYTES))
    ]
    ok = all(result == 1 for result in results)
    if not ok:
        _logger.warning("keep_freed_memory: glibc refused a mallopt setting; allocator may be partly tuned")
    _applied = ok
    return ok


def benchmark_allocator(system_allocator: bool) -> str:
    """For scripts with a ``--system-allocator`` flag: keep freed memory unless it is set; the allocator in effect.

    Returns ``"keep_freed_memory"`` or ``"system default"``, for the header of a benchmark's table.
    """
    if not system_allocator and keep_freed_memory():
        return "keep_freed_memory"
    return "system default"


MEMORY_FORMATS = ("auto", "channels_last", "contiguous")


def resolve_memory_format(name: str, device: str | object = "cpu") -> str:
    """``"channels_last"`` or ``"contiguous"`` for a ``--memory-format`` choice on ``device``.

    ``auto`` is channels_last on CPU, where it measures faster for these models (oneDNN's convolutions are
    channels-last natively: 1.2-1.3x per RepLKNet-31B train step, docs/benchmarks.md), and contiguous (NCHW)
    elsewhere, where nothing was measured.
    """
    if name not in MEMORY_FORMATS:
        raise ValueError(f"unknown memory format {name!r}; choose from {', '.join(MEMORY_FORMATS)}")
    if name != "auto":
        return name
    device_type = getattr(device, "type", str(device).split(":")[0])
    return "channels_last" if device_type == "cpu" else "contiguous"
