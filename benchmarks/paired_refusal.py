"""Is a model's harmful refusal below its SFT model's, or only different on a request or two? A paired
test over the same requests, per seed and pooled across seeds.

    python benchmarks/paired_refusal.py RESULTS [RESULTS ...] [--model NAME] [--family harmful]

Each RESULTS is a directory with a safe.json and the pipeline.yaml of its run (a run of
configs/demo-safe.yaml after `python examples/safe_rlhf.py RUN`: the run's own directory, or its copy
under benchmarks/results/demo-safe-runs while the run's directory, pipeline.yaml's run_dir, still has
the world and the models). The base model (sft) and MODEL (default: the default safe RLHF variant)
answer both held-out splits again as the evaluation did (greedy, the same token limit and batches, the
model paths safe.json names; the refusal counts are checked against safe.json's), and each request of
FAMILY is refused or not by each. Per split: the requests SFT refuses and MODEL does not (lost), the
reverse (gained), and the exact one-sided McNemar p-value of "MODEL refuses less often"
(alignkit.eval.metrics.paired_sign_test), per seed and over all seeds' requests together. The requests
are not independent: each split asks about a few inputs in many phrasings, and a model tends to get one
input right or wrong in most of them, so the test over requests finds a difference more readily than the
data warrant. The second test counts inputs instead: those MODEL refuses in fewer phrasings than SFT
(worse) and in more (better), with the sign test over those (input_differences). About two minutes per
run on one core.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_MODEL = "safe rlhf, no unsafe answers, ptx on cautious + sft on new inputs, harm-only cost"
SPLITS = {"heldout_input": "new inputs", "heldout_phrasing": "new phrasings"}
CATEGORY = {"harmful": "harm", "demeaning": "discrimination"}  # safety family -> its category in safe.json


def input_differences(inputs: list[str], base: list[bool], other: list[bool]) -> tuple[int, int]:
    """(worse, better): the inputs (INPUTS[i] is request i's) whose requests OTHER gets right fewer
    times than BASE, and more times."""
    diff: dict[str, int] = {}
    for x, b, o in zip(inputs, base, other):
        diff[x] = diff.get(x, 0) + int(o) - int(b)
    return sum(d < 0 for d in diff.values()), sum(d > 0 for d in diff.values())


def refusals(path: str, items: list, max_new_tokens: int, batch_size: int) -> list[bool]:
    """Whether PATH's greedy answer to each of ITEMS (all of a split, batched as the eval batches) is a refusal."""
    from alignkit.models import load_causal_lm, load_tokenizer
    from alignkit.models.generate import generate_responses
    from alignkit.world.evaluate import conversations
    from alignkit.world.safety import is_refusal

    answers = generate_responses(load_causal_lm(path), load_tokenizer(path), conversations(items), max_new_tokens,
                                 batch_size=batch_size)
    return [is_refusal(a) for a in answers]


def main() -> None:
    from alignkit.config import PipelineConfig, load_config
    from alignkit.eval.metrics import paired_sign_test, sign_test_p
    from alignkit.world.datasets import read_items

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, nargs="+")
    p.add_argument("--model", default=DEFAULT_MODEL, help="the model's name in RESULTS/safe.json")
    p.add_argument("--base", default="sft", help="the model it is compared with")
    p.add_argument("--family", default="harmful", choices=sorted(CATEGORY))
    args = p.parse_args()
    pooled: dict[str, tuple[list[bool], list[bool]]] = {split: ([], []) for split in SPLITS}
    pooled_inputs: dict[str, list[int]] = {split: [0, 0] for split in SPLITS}  # (worse, better) over seeds
    print(f"{args.model} against {args.base}, {args.family} requests refused")
    print("| seed | split | requests | base refused | model refused | lost | gained | p (model refuses less) "
          "| inputs | inputs worse / better | p (inputs) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for results in args.results:
        cfg = load_config(PipelineConfig, str(results / "pipeline.yaml"))
        models = json.loads((results / "safe.json").read_text())["results"]["models"]
        run = Path(cfg.run_dir)
        missing = [m for m in (args.base, args.model) if m not in models]
        if missing:
            raise SystemExit(f"{results / 'safe.json'}: no model {', '.join(map(repr, missing))} (it has {', '.join(models)})")
        for split, label in SPLITS.items():
            items = read_items(run / "world" / f"eval_{split}.jsonl")
            keep = [i.family == args.family for i in items]
            outcome = {}
            for name in (args.base, args.model):
                refused = [r for r, k in zip(refusals(models[name]["path"], items, cfg.eval.max_new_tokens,
                                                      cfg.eval.batch_size), keep) if k]
                recorded = models[name]["scores"][split]["by_category"][CATEGORY[args.family]]
                if round(recorded["refusal_rate"] * recorded["n_harmful"]) != sum(refused) or recorded["n_harmful"] != len(refused):
                    print(f"warning: {results} {name} {split}: {sum(refused)} of {len(refused)} refused now, "
                          f"safe.json says {recorded['refusal_rate'] * recorded['n_harmful']:.0f} of {recorded['n_harmful']}")
                outcome[name] = refused
            base, other = outcome[args.base], outcome[args.model]
            pooled[split][0].extend(base)
            pooled[split][1].extend(other)
            inputs = [json.dumps(i.params, sort_keys=True) for i, k in zip(items, keep) if k]  # one input, its phrasings
            worse, better = input_differences(inputs, base, other)
            pooled_inputs[split][0] += worse
            pooled_inputs[split][1] += better
            t = paired_sign_test(base, other)
            print(f"| {cfg.world.seed} | {label} | {t['n']} | {sum(base)} | {sum(other)} | {t['lost']} | {t['gained']} "
                  f"| {t['p_worse']:.2g} | {len(set(inputs))} | {worse} / {better} | {sign_test_p(worse, better):.2g} |",
                  flush=True)
    for split, label in SPLITS.items():
        base, other = pooled[split]
        t, (worse, better) = paired_sign_test(base, other), pooled_inputs[split]
        print(f"| all | {label} | {t['n']} | {sum(base)} | {sum(other)} | {t['lost']} | {t['gained']} | {t['p_worse']:.2g} "
              f"| | {worse} / {better} | {sign_test_p(worse, better):.2g} |")


if __name__ == "__main__":
    main()
