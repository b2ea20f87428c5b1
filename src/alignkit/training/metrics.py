"""Metrics a person can plot: one JSON object per line in metrics.jsonl, optionally TensorBoard."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


class MetricsWriter:
    """Appends rows to run_dir/metrics.jsonl (and TensorBoard when asked). Main process only."""

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = False):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ImportError("log.tensorboard=true needs the tensorboard package: pip install tensorboard") from exc
            self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def write(self, step: int, **values: Any) -> None:
        if not self.enabled:
            return
        row = {"step": step, "time": round(time.time(), 3), **values}
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def truncate_metrics(path: str | Path, after_step: int) -> None:
    """On resume, drop rows logged after the checkpoint so the file reads as one uninterrupted run."""
    path = Path(path)
    if path.exists():
        rows = [r for r in read_metrics(path) if r.get("step", 0) <= after_step]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
