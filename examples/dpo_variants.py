"""The DPO family on the demo world, one variant at a time, each judged by the oracle on held-out requests.

    make demo                                     # first: the SFT model and the rankings in runs/demo
    python examples/dpo_variants.py runs/demo     # ~25 minutes on 2 cores; writes runs/demo/dpo_variants.md
    python examples/dpo_variants.py runs/demo --only ipo simpo    # some (then --table compares all finished)

Every variant starts from the demo's SFT model with the demo's DPO settings (configs/demo.yaml, dpo:)
and changes one thing: the loss (DPO, conservative DPO, IPO, hinge, SimPO, ORPO), the NLL term on the
chosen response, or beta. Finished variants are reused, so runs can be split over several shells.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from alignkit.config import PipelineConfig, load_config
from alignkit.stages.dpo import run_dpo
from alignkit.training.metrics import read_metrics
from alignkit.world.datasets import read_items
from alignkit.world.evaluate import evaluate_models
from alignkit.world.report import variant_table

VARIANTS = {  # short name (its run directory) -> (label, overrides of the demo's dpo section)
    "demo": ("demo (DPO + NLL)", []),
    "plain": ("plain DPO (no NLL term)", ["nll_coef=0"]),
    "beta0.03": ("beta 0.03", ["beta=0.03"]),
    "beta0.3": ("beta 0.3", ["beta=0.3"]),
    "cdpo": ("conservative DPO, 10% flipped labels", ["loss=cdpo", "label_smoothing=0.1"]),
    "ipo": ("IPO (tau 0.1) + NLL", ["loss=ipo"]),
    "hinge": ("hinge + NLL", ["loss=hinge"]),
    "simpo": ("SimPO (beta 2, gamma 0.5)", ["loss=simpo", "beta=2.0", "nll_coef=0"]),
    "orpo": ("ORPO (lambda 0.1)", ["loss=orpo", "nll_coef=0"]),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path, help="a finished demo run (make demo)")
    p.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"))
    p.add_argument("--only", nargs="*", choices=list(VARIANTS), help="variants to train (default: all)")
    p.add_argument("--table", action="store_true", help="train nothing; compare the finished variants")
    args = p.parse_args()
    cfg = load_config(PipelineConfig, args.config, [f"run_dir={args.run_dir}"])
    world, out_root = args.run_dir / "world", args.run_dir / "dpo_variants"
    sft = args.run_dir / "sft" / "model"

    for short, (name, overrides) in VARIANTS.items():
        if args.table or (args.only and short not in args.only):
            continue
        variant = load_config(PipelineConfig, args.config, [f"run_dir={args.run_dir}", "dpo.log.progress=false",
                                                            *(f"dpo.{o}" for o in overrides)])
        # The demo's DPO settings with this variant's changes, placed exactly as the pipeline places them.
        dpo_cfg = dataclasses.replace(variant.dpo, output_dir=str(out_root / short), resume=True,
                                      model=dataclasses.replace(variant.dpo.model, path=str(sft)),
                                      data=dataclasses.replace(variant.dpo.data, train_path=str(world / "rankings.jsonl")))
        dpo_cfg.validate(name)
        print(f"== {name}", flush=True)
        run_dpo(dpo_cfg)

    done = {short: name for short, (name, _) in VARIANTS.items() if (out_root / short / "model" / "config.json").exists()}
    policies = {name: out_root / short / "model" for short, name in done.items()}
    extra = {}
    for short, name in done.items():
        rows = read_metrics(out_root / short / "metrics.jsonl")
        last = [r for r in rows if "eval_accuracy" in r][-1]
        train = [r for r in rows if "loss" in r][-1]
        extra[name] = {"held-out pair accuracy": f"{100 * last['eval_accuracy']:.0f}%",
                       "KL proxy": f"{train['kl_proxy']:.2f}" if "kl_proxy" in train else "-",
                       "chosen log-prob per token": f"{train['logp_chosen']:.2f}"}
    splits = {"heldout_phrasing": read_items(world / "eval_heldout_phrasing.jsonl"),
              "heldout_input": read_items(world / "eval_heldout_input.jsonl")}
    results = evaluate_models({"sft": sft, **policies}, splits, "sft", cfg.eval.max_new_tokens, cfg.eval.batch_size)
    table = variant_table(results, "sft", extra)
    (args.run_dir / "dpo_variants.md").write_text(table)
    (args.run_dir / "dpo_variants.json").write_text(json.dumps({"extra": extra, "results": results}, indent=2,
                                                               default=str) + "\n")
    print(table)


if __name__ == "__main__":
    main()
