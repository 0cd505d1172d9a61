"""The base of every run's configuration: the bookkeeping shared by ``replknet.train`` and ``replknet.seg``.

``RunConfig`` holds where a run writes, whether it may replace a finished run there, its seed, its device and how
often it logs, evaluates and saves; ``replace``/``validate``/``to_dict``/``from_dict`` are written once here.
``replknet.train.TrainConfig`` (classification, intervals in epochs) and ``replknet.seg.TrainConfig``
(segmentation, intervals in iterations) add their own fields.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

__all__ = ["RunConfig"]

_Config = TypeVar("_Config", bound="RunConfig")


@dataclass(frozen=True)
class RunConfig:
    """Bookkeeping every training run has. Subclasses may change the defaults by re-declaring a field."""

    output: str = "runs/run"  # the run folder: weights, training checkpoint, config, metrics
    overwrite: bool = False  # replace a finished run in ``output`` (without it, a finished run is refused)
    seed: int = 0
    device: str | None = None  # "cpu", "cuda", "cuda:N"; None or "auto": CUDA when available
    log_every: int = 10  # updates between loss records in metrics.jsonl
    eval_every: int = 1  # between validations, in the run's unit (epochs or iterations)
    save_every: int = 1  # between training checkpoints, in the same unit

    # How error messages name the options (``unknown training option(s)``).
    kind: ClassVar[str] = "run"

    def replace(self: _Config, **changes: Any) -> _Config:
        """A copy with ``changes``; unknown names raise ``ValueError`` naming them."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown {self.kind} option(s) {unknown}")
        return dataclasses.replace(self, **changes)

    def validate(self: _Config) -> _Config:
        """Check value ranges; raises ``ValueError`` naming the bad option. Subclasses extend it."""
        for name in ("log_every", "eval_every", "save_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not self.output:
            raise ValueError("output must name a folder")
        if self.device is not None and self.device != "auto" and self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {self.device!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls: type[_Config], values: dict[str, Any]) -> _Config:
        """The inverse of ``to_dict`` (JSON lists become tuples where the field holds a tuple)."""
        values = dict(values)
        defaults = cls()
        for name, value in values.items():
            if isinstance(value, list) and isinstance(getattr(defaults, name, None), tuple):
                values[name] = tuple(value)
        return defaults.replace(**values)
