"""The full training state on disk: written atomically, read with ``weights_only=True``.

Model, EMA, optimizer, grad scaler, scheduler, epoch/step counters and every RNG state (torch CPU, CUDA, numpy,
Python ``random``) of every process, all as tensors and plain containers so that no arbitrary object is pickled.
Both engines (``replknet.train``, ``replknet.seg``) save and restore their RNG states with ``gather_rng_states`` /
``restore_rng_states``: under DDP each process gets back its own streams, so a resumed run is exact.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "capture_rng_state",
    "gather_rng_states",
    "load_training_state",
    "restore_rng_state",
    "restore_rng_states",
    "save_training_state",
]

_logger = logging.getLogger(__name__)


def capture_rng_state() -> dict[str, Any]:
    """Every random generator the training loop touches, as tensors."""
    mt_name, mt_keys, mt_pos, mt_has_gauss, mt_gauss = np.random.get_state()  # noqa: NPY002  (timm Mixup uses it)
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(mt_keys, dtype=np.int64)),
        "numpy_meta": torch.tensor([mt_pos, mt_has_gauss], dtype=torch.int64),
        "numpy_gauss": torch.tensor([mt_gauss], dtype=torch.float64),
        "python_state": torch.tensor(py_state, dtype=torch.int64),
        "python_version": int(py_version),
        "python_gauss": torch.tensor([float("nan") if py_gauss is None else py_gauss], dtype=torch.float64),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng_state``."""
    torch.set_rng_state(state["torch"])
    position, has_gauss = (int(v) for v in state["numpy_meta"].tolist())
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, position, has_gauss, float(state["numpy_gauss"].item())))  # noqa: NPY002
    gauss = float(state["python_gauss"].item())
    py_state = tuple(int(v) for v in state["python_state"].tolist())
    random.setstate((int(state["python_version"]), py_state, None if np.isnan(gauss) else gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states() -> list[dict[str, Any]]:
    """Every process's ``capture_rng_state()``, in rank order (a collective under DDP: call it on every process)."""
    import torch.distributed as dist

    state = capture_rng_state()
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [state]
    states: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return states


def restore_rng_states(states: list[dict[str, Any]] | dict[str, Any], rank: int = 0, world_size: int = 1) -> bool:
    """Restore this process's entry of ``gather_rng_states()``; False (and a warning) when the process count changed.

    A single state (a checkpoint written before states were gathered per process) counts as one process's.
    """
    if isinstance(states, dict):
        states = [states]
    if len(states) != world_size:
        _logger.warning(
            "the checkpoint holds the random state of %d process(es), this run has %d: the random streams start "
            "afresh, so the resumed run will not repeat the uninterrupted one exactly",
            len(states),
            world_size,
        )
        return False
    restore_rng_state(states[rank])
    return True


def save_training_state(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then ``os.replace``: a reader never sees half a file."""
    from replknet.checkpoint import atomic_torch_save

    return atomic_torch_save(state, path)


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training state written by ``save_training_state`` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no training checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise RuntimeError(f"{path} is not a readable training checkpoint: {type(error).__name__}: {error}") from None
    missing = {"model", "optimizer", "epoch", "step"} - set(state)
    if missing:
        raise RuntimeError(f"{path} is not a training checkpoint of this library (missing {sorted(missing)})")
    return state
