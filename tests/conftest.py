"""Shared test fixtures: the ../shared folder beside the clone (official fixtures, sample stimuli)."""

from __future__ import annotations

from pathlib import Path

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
