"""The one metrics writer of every engine: ``metrics.jsonl`` records (and TensorBoard scalars when installed).

Written by the main process only. A fresh run starts a new file; a resumed run keeps the records up to the step
it resumes from and drops any written after it (by the attempt that was interrupted), so the log of a resumed run
is the log of an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

__all__ = ["METRICS_NAME", "MetricsLog"]

_logger = logging.getLogger(__name__)

METRICS_NAME = "metrics.jsonl"


class MetricsLog:
    """JSONL records ``{"kind": ..., "step": ..., ...}`` in ``folder/metrics.jsonl``; TensorBoard under
    ``folder/tensorboard`` when ``torch.utils.tensorboard`` can be imported.

    Args:
        folder: the run folder (it must exist when ``enabled``).
        enabled: False on every process but the main one (nothing is written).
        resume_step: None for a fresh run (an old file is replaced); else the step the run resumes from.
    """

    def __init__(self, folder: str | Path, enabled: bool = True, resume_step: int | None = None) -> None:
        self.enabled = enabled
        self.path = Path(folder) / METRICS_NAME
        self.writer = None
        if not enabled:
            return
        from replknet.checkpoint import atomic_write_text

        kept = []
        if resume_step is not None and self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    step = json.loads(line).get("step", 0)
                except json.JSONDecodeError:
                    continue  # a line cut by the interruption
                if step <= resume_step:
                    kept.append(line + "\n")
        atomic_write_text(self.path, "".join(kept))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(Path(folder) / "tensorboard"))
        except ImportError:
            _logger.debug("tensorboard is not installed: JSONL metrics only")

    def write(self, record: dict, step: int) -> None:
        """Append ``record`` (it should hold ``kind`` and ``step``); its numbers also go to TensorBoard."""
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                    self.writer.add_scalar(f"{record.get('kind', 'train')}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
