"""PPO's levers on the demo world, one at a time, each judged by the oracle on held-out requests.

    make demo                                   # first: the SFT model and reward model in runs/demo
    python examples/ppo_levers.py runs/demo     # ~20 minutes on 2 cores; writes runs/demo/levers.md

Every variant starts from the demo's SFT model and reward model with the demo's PPO settings and
changes one thing: the KL coefficient, reward clipping, the reward offset (normalisation), the
response length limit, PPO-ptx, and early stopping (the best policy by held-out reward against the last).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from alignkit.config import PipelineConfig, load_config
from alignkit.config import pipeline_ppo_config
from alignkit.stages.ppo import run_ppo
from alignkit.training.metrics import read_metrics
from alignkit.world.datasets import read_items
from alignkit.world.evaluate import evaluate_models
from alignkit.world.report import variant_table

NO_OFFSET = "reward model without its offset"  # a variant that swaps the reward model directory
VARIANTS = {  # name -> overrides of the demo's ppo section
    "demo (beta 0.15)": [],
    "beta 0.05": ["kl.coef=0.05"],
    "beta 0.4": ["kl.coef=0.4"],
    "adaptive beta, target KL 0.2": ["kl.target=0.2", "kl.horizon=2000"],
    "reward clipped to [-1, 1]": ["ppo.reward_clip=1.0"],
    "no reward offset": [NO_OFFSET],
    "24 new tokens (answers cut off)": ["rollout.max_new_tokens=24"],
    "PPO-ptx, 0.2 x the SFT loss": ["ppo.ptx_coef=0.2", "ppo.ptx_path=WORLD/sft.jsonl"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path, help="a finished demo run (make demo)")
    p.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"))
    p.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    args = p.parse_args()
    cfg = load_config(PipelineConfig, args.config, [f"run_dir={args.run_dir}"])
    world, out_root = args.run_dir / "world", args.run_dir / "levers"
    world_files = {name: world / f"{name}.jsonl" for name in ("rl_prompts", "rl_eval_prompts")}
    sft, rm = args.run_dir / "sft" / "model", args.run_dir / "rm" / "model"
    no_offset = out_root / "rm-no-offset"
    if not (no_offset / "config.json").exists():
        shutil.copytree(rm, no_offset, ignore=shutil.ignore_patterns("reward_normalization.json"), dirs_exist_ok=True)

    policies: dict[str, Path] = {}
    summary: dict[str, dict] = {}
    for name, overrides in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        out = out_root / name.split(" (")[0].replace(" ", "_").replace(",", "").replace("[", "").replace("]", "")
        # The demo's PPO settings with this variant's changes, placed exactly as the pipeline places them.
        variant = load_config(PipelineConfig, args.config, [
            f"run_dir={args.run_dir}", "ppo.log.progress=false",
            *(f"ppo.{o}".replace("WORLD", str(world)) for o in overrides if o != NO_OFFSET)])
        ppo_cfg = pipeline_ppo_config(variant.ppo, out, sft, no_offset if NO_OFFSET in overrides else rm, world_files)
        ppo_cfg.validate(name)
        print(f"== {name}", flush=True)
        final = run_ppo(ppo_cfg)
        rows = read_metrics(out / "metrics.jsonl")
        evals = [r for r in rows if "eval_reward" in r]
        best = max(evals, key=lambda r: r["eval_reward"])
        policies[name] = out / "best"
        summary[name] = {"kept_iteration": best["step"], "kl_max": max(r["kl"] for r in rows if "kl" in r)}
        if name == "beta 0.05":  # early stopping: the same run's last policy against its best
            policies["beta 0.05, last iteration (no early stop)"] = final
            summary["beta 0.05, last iteration (no early stop)"] = {"kept_iteration": rows[-1]["step"],
                                                                     "kl_max": summary[name]["kl_max"]}

    splits = {"heldout_phrasing": read_items(world / "eval_heldout_phrasing.jsonl"),
              "heldout_input": read_items(world / "eval_heldout_input.jsonl")}
    results = evaluate_models({"sft": sft, **policies}, splits, "sft", cfg.eval.max_new_tokens, cfg.eval.batch_size)
    extra = {name: {"kept iteration": str(s["kept_iteration"]), "max KL": f"{s['kl_max']:.2f}"}
             for name, s in summary.items()}
    table = variant_table(results, "sft", extra)
    (args.run_dir / "levers.md").write_text(table)
    (args.run_dir / "levers.json").write_text(json.dumps({"summary": summary, "results": results}, indent=2,
                                                         default=str) + "\n")
    print(table)


if __name__ == "__main__":
    main()
