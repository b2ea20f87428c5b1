"""The reward model's levers on the demo world, one at a time, each judged on correctness.

    make demo-seeds                                          # or make demo: a finished run
    python examples/rm_levers.py runs/demo-seeds/seed-0      # ~25 minutes on 2 cores; RUN_DIR/rm_levers.md

Every variant starts from the run's SFT model with the demo's reward-model settings (the annotator's
rankings, batches of 32 pairs, 900 steps) and changes one thing: batches of whole rankings for 400
steps (about the same time, 3x the pairs); 3,000 more prompts rated over right and wrong answers
(world.correctness_prompts), by pair or by ranking (configs/demo-correctness.yaml); on-policy ratings
of the SFT model's own samples; an ensemble of three (seeds 0-2, the mean score). Each is scored by
the oracle on the world's candidate responses to the held-out prompts (pairwise accuracy by kind of
pair; correctness also split by the kinds of the two responses) and on the SFT model's own samples,
as the pipeline scores its reward model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from alignkit.config import PipelineConfig, load_config
from alignkit.stages.rm import run_rm
from alignkit.stages.rounds import draw_prompts, sample_round
from alignkit.world.annotate import rate_samples
from alignkit.world.datasets import extra_correctness_rows, read_items
from alignkit.world.evaluate import evaluate_reward_model

VARIANTS = ("demo", "by ranking, 400 steps", "+3000 correctness prompts", "+3000 correctness prompts, by ranking",
            "+512 rated SFT samples", "ensemble of 3")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path, help="a finished demo run (its world, sft and rm)")
    p.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"))
    p.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    args = p.parse_args()
    ran = args.run_dir / "pipeline.yaml"
    cfg = load_config(PipelineConfig, ran if ran.is_file() else args.config, [f"run_dir={args.run_dir}",
                                                                              "rm.log.progress=false"])
    world, out_root = args.run_dir / "world", args.run_dir / "rm_levers"
    out_root.mkdir(parents=True, exist_ok=True)
    sft = args.run_dir / "sft" / "model"
    rankings = (world / "rankings.jsonl").read_text()

    def train(name: str, data: str | None = None, **changes) -> Path:
        """The pipeline's rm stage with this variant's data and settings."""
        out = out_root / name.replace(" ", "_").replace("+", "plus").replace(",", "")
        path = world / "rankings.jsonl"
        if data is not None:
            path = out_root / f"{out.name}.jsonl"
            path.write_text(data)
        rm = cfg.rm
        rm_cfg = dataclasses.replace(
            rm, output_dir=str(out), resume=True, model=dataclasses.replace(rm.model, path=str(sft)),
            data=dataclasses.replace(rm.data, train_path=str(path)),
            normalize=dataclasses.replace(rm.normalize, prompts_path=str(world / "rl_prompts.jsonl"),
                                          policy_path=str(sft)), **changes)
        rm_cfg.validate(name)
        print(f"== {name}", flush=True)
        return run_rm(rm_cfg)

    models: dict[str, Path | list[Path]] = {}
    for name in VARIANTS:
        if args.only and name not in args.only:
            continue
        if name == "demo":
            models[name] = args.run_dir / "rm" / "model"
        elif name == "by ranking, 400 steps":
            models[name] = train(name, batch_by="ranking", train=dataclasses.replace(cfg.rm.train, max_steps=400))
        elif name.startswith("+3000 correctness prompts"):
            taken = {json.loads(line)["prompt"] for line in rankings.splitlines() if line.strip()}
            extra = extra_correctness_rows(dataclasses.replace(cfg.world, correctness_prompts=3000), taken)
            data = rankings + "".join(json.dumps(r) + "\n" for r in extra)
            if name.endswith("by ranking"):
                models[name] = train(name, data, batch_by="ranking", train=dataclasses.replace(cfg.rm.train, max_steps=400))
            else:
                models[name] = train(name, data)
        elif name == "+512 rated SFT samples":
            rl = [json.loads(line) for line in (world / "rl_prompts.jsonl").read_text().splitlines() if line.strip()]
            rows, _ = sample_round(sft, draw_prompts(rl, 512, cfg.world.seed, 0),
                                   4, 1.0, cfg.rounds.max_new_tokens, 0)
            rated = rate_samples(rows, cfg.world.label_noise, f"{cfg.world.seed}:levers")
            models[name] = train(name, rankings + "".join(json.dumps(r) + "\n" for r in rated))
        elif name == "ensemble of 3":
            models[name] = [args.run_dir / "rm" / "model"] + [
                train(f"seed {s}", seed=s) for s in (1, 2)]

    items = read_items(world / "eval_heldout_phrasing.jsonl")
    results = {name: evaluate_reward_model(m, items, sft, cfg.world.seed, cfg.eval.batch_size)
               for name, m in models.items()}
    kinds = ["correctness", "safety", "relevance", "style"]
    split = {"correct>wrong": "right > wrong", "verbose>wrong": "padded right > wrong"}
    lines = ["| variant | held-out pairs | " + " | ".join(kinds) + " | " + " | ".join(split.values())
             + " | top response is the best | SFT model's own samples |",
             "| --- |" + " ---: |" * (len(kinds) + len(split) + 3)]
    for name, r in results.items():
        cells = [f"{100 * r['accuracy']:.1f}%", *(f"{100 * r['by_kind'][k]:.1f}%" for k in kinds),
                 *(f"{100 * r['correctness_by_pair'][k]:.0f}%" for k in split),
                 f"{100 * r['top1_is_best']:.0f}%", f"{100 * r['on_policy_accuracy']:.1f}%"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    (args.run_dir / "rm_levers.md").write_text(table)
    (args.run_dir / "rm_levers.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table)


if __name__ == "__main__":
    main()
