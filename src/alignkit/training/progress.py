"""A progress bar with rate and ETA (rich), fed the latest loss, LR and tokens/s."""

from __future__ import annotations

from typing import Any

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Steps per second (or seconds per step when slower than one a second)."""

    def render(self, task) -> Text:
        speed = task.speed
        if not speed:
            return Text("-- step/s")
        return Text(f"{speed:.2f} step/s" if speed >= 1 else f"{1 / speed:.1f} s/step")


class ProgressBar:
    def __init__(self, total: int, start: int = 0, description: str = "train", enabled: bool = True):
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            disable=not enabled,
        )
        self.task = self.progress.add_task(description, total=total, completed=start, stats="")

    def __enter__(self) -> "ProgressBar":
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def update(self, step: int, **stats: float) -> None:
        text = "  ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items())
        self.progress.update(self.task, completed=step, **({"stats": text} if stats else {}))
