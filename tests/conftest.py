"""Shared test fixtures: the ../shared folder beside the clone (official fixtures, sample stimuli)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures"


def pytest_configure(config: pytest.Config) -> None:
    # The suite runs as `pytest -n 2` on 2 cores: one intra-op thread per worker avoids oversubscription,
    # which makes the small tensors of these tests several times slower.
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # Again before every test: a command run in-process with --threads (bench, seg-train, seg-eval) must not
    # leave the next test on more threads (slower here, and the CPU auto rule keys on the thread count).
    torch.set_num_threads(1)


def _shared_path(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found (tests expect ../shared beside the repository)")
    return path


@pytest.fixture
def shared_path():
    """``shared_path(*parts)``: a path under ../shared, skipping the test with a clear reason when absent."""
    return _shared_path


def _write_png(path: Path, array: np.ndarray, bit_depth: int, color_type: int) -> Path:
    """A PNG written by hand (PIL cannot write 48-bit RGB): rows of big-endian samples, filter 0, one IDAT."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    height, width = array.shape[:2]
    dtype = ">u2" if bit_depth == 16 else "u1"
    rows = b"".join(b"\x00" + row.astype(dtype).tobytes() for row in array)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture
def write_png():
    """``write_png(path, array, bit_depth, color_type)``: a PNG written by hand, e.g. 48-bit RGB (PIL cannot)."""
    return _write_png
