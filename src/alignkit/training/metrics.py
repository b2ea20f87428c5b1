"""Metrics a person can plot: one JSON object per line in metrics.jsonl, optionally TensorBoard and
the experiment trackers of `log.report_to` (accelerate's: wandb, mlflow, trackio, ...)."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from alignkit.config.parts import TRACKERS


def flat_config(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """A stage config as dotted keys -> numbers, strings and booleans (lists as text), for trackers."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value, key = getattr(cfg, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out.update(flat_config(value, f"{key}."))
        else:
            out[key] = value if isinstance(value, (int, float, str, bool)) or value is None else json.dumps(value)
    return out


def start_trackers(names: list[str], run_dir: Path, project: str, config: Any) -> list[Any]:
    """accelerate's trackers for `names` (not tensorboard), started, with the run's config stored.
    Each is configured as the library usually is (WANDB_MODE, MLFLOW_TRACKING_URI, ...)."""
    import importlib.util

    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    run_name = run_dir.name
    # The run's name where the tracker takes one beside the project (accelerate passes the project).
    named = {"wandb": {"name": run_name}, "mlflow": {"run_name": run_name}, "comet_ml": {"name": run_name}}
    trackers = []
    for name in names:
        if name == "tensorboard":
            continue
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise ImportError(f"log.report_to: {name} needs its package: pip install {TRACKERS[name]}")
        cls = LOGGER_TYPE_TO_CLASS[name]
        tracker = cls(project, str(run_dir), **named.get(name, {})) if cls.requires_logging_directory \
            else cls(project, **named.get(name, {}))
        tracker.start()
        if config is not None:
            tracker.store_init_configuration(flat_config(config))
        trackers.append(tracker)
    return trackers


class MetricsWriter:
    """Appends rows to run_dir/metrics.jsonl, and hands each to TensorBoard and the trackers when
    asked. Main process only."""

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = False,
                 report_to: list[str] | tuple[str, ...] = (), config: Any = None, project: str = "alignkit"):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.tb = None
        self.trackers = start_trackers(list(report_to), Path(run_dir), project, config) if enabled else []
        if enabled and (tensorboard or "tensorboard" in report_to):
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
        numbers = {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.tb is not None:
            for key, value in numbers.items():
                self.tb.add_scalar(key, value, step)
        for tracker in self.trackers:
            tracker.log(numbers, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def truncate_metrics(path: str | Path, after_step: int) -> None:
    """On resume, drop rows logged after the checkpoint so the file reads as one uninterrupted run."""
    path = Path(path)
    if path.exists():
        rows = [r for r in read_metrics(path) if r.get("step", 0) <= after_step]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
