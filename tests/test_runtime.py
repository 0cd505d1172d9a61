"""replknet.runtime.keep_freed_memory: large blocks are reused instead of re-faulted, opt-out honoured.

Each case runs in a fresh interpreter: the setting is process-wide and must not leak into the test process.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc only"
)

# Allocate, touch and free a 64 MiB block a few times, then count the minor page faults per further cycle: with
# glibc's defaults the block is a fresh mmap each time (one fault per 4 KiB page, ~16k); kept memory is reused.
_PROBE = """
import json, resource, sys
import torch
from replknet.runtime import keep_freed_memory
applied = keep_freed_memory(respect_env=True) if sys.argv[1] == "keep" else False
numel = 16 << 20
for _ in range(4):  # the heap settles within the first two or three cycles
    t = torch.ones(numel); del t
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    t = torch.ones(numel); del t
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 4
print(json.dumps({"applied": applied, "faults": faults, "again": keep_freed_memory() if applied else None}))
"""


def _probe(mode: str, env: dict[str, str] | None = None) -> dict:
    environment = {**os.environ, **(env or {})}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, env=environment, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@glibc_only
def test_kept_memory_is_reused_without_page_faults():
    default = _probe("system")
    kept = _probe("keep", {"REPLKNET_KEEP_FREED_MEMORY": "1"})
    pages = (64 << 20) // 4096
    assert default["faults"] > pages // 2, default  # glibc's default: a fresh mapping, faulted page by page
    assert kept["applied"] is True and kept["again"] is True  # idempotent
    assert kept["faults"] < pages // 20, kept


@glibc_only
def test_environment_variable_turns_it_off():
    result = _probe("keep", {"REPLKNET_KEEP_FREED_MEMORY": "0"})
    assert result["applied"] is False
    assert result["faults"] > (64 << 20) // 4096 // 2


def test_cli_applies_it(monkeypatch):
    calls = []
    import replknet.runtime

    monkeypatch.setattr(replknet.runtime, "keep_freed_memory", lambda respect_env=False: calls.append(respect_env))
    from replknet.cli.main import main

    assert main(["check", "--model", "replknet_tiny", "--image-size", "64"]) == 0
    assert calls == [True]


def test_benchmark_allocator_label():
    from replknet.runtime import benchmark_allocator

    assert benchmark_allocator(system_allocator=True) == "system default"  # nothing changed in this process
    code = "from replknet.runtime import benchmark_allocator; print(benchmark_allocator(False))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    expected = "keep_freed_memory" if platform.libc_ver()[0] == "glibc" else "system default"
    assert done.stdout.strip().splitlines()[-1] == expected
