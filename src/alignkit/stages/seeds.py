"""The pipeline over several seeds: `alignkit pipeline configs/demo.yaml seeds=0,1,2,3,4`.

Each seed is the whole pipeline in its own process, under run_dir/seed-N, with world.seed and every
stage's seed set to N (world data, initialisation and sampling all follow it); the pretrained bases
share one cache. A seed whose run finished with the same config is reused; a started one resumes
(the pipeline skips finished stages and checks that their inputs did not change). Then the table
across seeds (alignkit.world.seeds) goes to run_dir/seeds.{md,json,html}.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from alignkit.config import PipelineConfig, to_yaml
from alignkit.errors import AlignkitError
from alignkit.training.run import console

SEED_CONFIG = "pipeline-seed.yaml"


def seed_config(cfg: PipelineConfig, seed: int) -> PipelineConfig:
    """The one-seed pipeline of `cfg` for `seed`: its own run directory, the shared base cache, and
    every section that has a seed (world, pretrain, each stage) set to it."""
    seeded = {f.name: dataclasses.replace(getattr(cfg, f.name), seed=seed) for f in dataclasses.fields(cfg)
              if dataclasses.is_dataclass(getattr(cfg, f.name)) and hasattr(getattr(cfg, f.name), "seed")}
    return dataclasses.replace(cfg, run_dir=str(Path(cfg.run_dir) / f"seed-{seed}"), seeds=[], seed_workers=1,
                               cache_dir=str(cfg.cache_root()), **seeded)


def finished(seed_cfg: PipelineConfig) -> bool:
    """A seed's run is done, with this very config: its results and the config it ran are there."""
    run_dir = Path(seed_cfg.run_dir)
    ran = run_dir / "pipeline.yaml"
    return (run_dir / "results.json").is_file() and ran.is_file() and ran.read_text() == to_yaml(seed_cfg)


def run_seeds(cfg: PipelineConfig) -> Path:
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    todo: list[tuple[int, Path]] = []
    for seed in cfg.seeds:
        seed_cfg = seed_config(cfg, seed)
        if finished(seed_cfg):
            console.print(f"[bold]seed {seed}[/] finished before: {seed_cfg.run_dir}")
            continue
        path = Path(seed_cfg.run_dir) / SEED_CONFIG
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(to_yaml(seed_cfg))
        todo.append((seed, path))
    running: list[tuple[int, subprocess.Popen, Any]] = []  # seed, its process, its log file
    failed: list[int] = []
    while todo or running:
        while todo and len(running) < cfg.seed_workers:
            seed, path = todo.pop(0)
            console.print(f"[bold]seed {seed}[/] the pipeline in {path.parent}")
            # Alone, the seed's run shows its progress here; side by side, each writes its own log.
            log = open(path.parent / "log.txt", "w") if cfg.seed_workers > 1 else None  # noqa: SIM115
            proc = subprocess.Popen([sys.executable, "-m", "alignkit", "pipeline", str(path)], stdout=log,
                                    stderr=subprocess.STDOUT if log else None)
            running.append((seed, proc, log))
        seed, proc, log, code = next_finished(running)
        if log:
            log.close()
        if code:
            failed.append(seed)
            where = f"; its log: {log.name}" if log else ""
            console.print(f"[bold red]seed {seed} failed[/] (exit {code}){where}")
        else:
            console.print(f"[bold]seed {seed}[/] done")
    if failed:
        raise AlignkitError(f"the pipeline failed for seed(s) {', '.join(map(str, failed))}; the other seeds are kept, "
                            "and a rerun of the same command reuses them")
    return write_across_seeds(cfg, started)


def next_finished(running: list[tuple[int, subprocess.Popen, Any]]) -> tuple[int, subprocess.Popen, Any, int]:
    """Remove and return whichever running seed ends first, with its exit code: a freed worker takes
    the next seed at once, not when the longest of the running seeds is done."""
    while True:
        for i, (seed, proc, log) in enumerate(running):
            code = proc.poll()
            if code is not None:
                del running[i]
                return seed, proc, log, code
        time.sleep(0.5)


def write_across_seeds(cfg: PipelineConfig, started: float) -> Path:
    from alignkit.world.seeds import seeds_markdown, summarize_seeds, write_seeds_report

    run_dir = Path(cfg.run_dir)
    per_seed = {s: json.loads((run_dir / f"seed-{s}" / "results.json").read_text()) for s in cfg.seeds}
    summary = summarize_seeds(per_seed)
    summary["command_seconds"] = time.time() - started
    paths = write_seeds_report(summary, run_dir)
    console.print(seeds_markdown(summary))
    console.print(f"across seeds: {paths['md']} and {paths['json']}")
    console.print(f"[bold]report: {paths['html']}[/] (open it in a browser)")
    return run_dir
