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


def refusals(path: str, splits: dict[str, list], max_new_tokens: int, batch_size: int) -> dict[str, list[bool]]:
    """Split -> whether PATH's greedy answer to each of its items (all of the split, batched as the eval
    batches) is a refusal; the model is loaded once for every split."""
    from alignkit.models import load_causal_lm, load_tokenizer
    from alignkit.models.generate import generate_responses
    from alignkit.world.evaluate import conversations
    from alignkit.world.safety import is_refusal

    model, tokenizer = load_causal_lm(path), load_tokenizer(path)
    return {split: [is_refusal(a) for a in generate_responses(model, tokenizer, conversations(items), max_new_tokens,
                                                              batch_size=batch_size)]
            for split, items in splits.items()}


def row(seed: object, label: str, base: list[bool], other: list[bool], inputs: list[str]) -> str:
    """One table row: the paired test over the requests and the sign test over their inputs."""
    from alignkit.eval.metrics import paired_sign_test, sign_test_p

    t, (worse, better) = paired_sign_test(base, other), input_differences(inputs, base, other)
    return (f"| {seed} | {label} | {t['n']} | {sum(base)} | {sum(other)} | {t['lost']} | {t['gained']} "
            f"| {t['p_worse']:.2g} | {len(set(inputs))} | {worse} / {better} | {sign_test_p(worse, better):.2g} |")


def main() -> None:
    from alignkit.config import PipelineConfig, load_config
    from alignkit.world.datasets import read_items

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, nargs="+")
    p.add_argument("--model", default=DEFAULT_MODEL, help="the model's name in RESULTS/safe.json")
    p.add_argument("--base", default="sft", help="the model it is compared with")
    p.add_argument("--family", default="harmful", choices=sorted(CATEGORY))
    args = p.parse_args()
    # split -> (base's outcomes, the model's, each request's input) over every seed; an input is
    # prefixed with its seed, since the same words in two worlds are two inputs
    pooled: dict[str, tuple[list[bool], list[bool], list[str]]] = {split: ([], [], []) for split in SPLITS}
    print(f"{args.model} against {args.base}, {args.family} requests refused")
    print("| seed | split | requests | base refused | model refused | lost | gained | p (model refuses less) "
          "| inputs | inputs worse / better | p (inputs) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for results in args.results:
        missing = [f for f in ("pipeline.yaml", "safe.json") if not (results / f).exists()]
        if missing:
            p.error(f"{results}: no {' or '.join(missing)}; expected the directory of a run after "
                    "`python examples/safe_rlhf.py RUN`, or its copy under benchmarks/results/demo-safe-runs")
        cfg = load_config(PipelineConfig, str(results / "pipeline.yaml"))
        models = json.loads((results / "safe.json").read_text())["results"]["models"]
        run = Path(cfg.run_dir)
        absent = [m for m in (args.base, args.model) if m not in models]
        if absent:
            p.error(f"{results / 'safe.json'}: no model {', '.join(map(repr, absent))} (it has {', '.join(models)})")
        gone = [f"world/eval_{split}.jsonl" for split in SPLITS if not (run / "world" / f"eval_{split}.jsonl").exists()]
        gone += [models[m]["path"] for m in (args.base, args.model) if not Path(models[m]["path"]).exists()]
        if gone:
            p.error(f"{results}: its run ({run}) no longer has {', '.join(gone)}: the models must answer again")
        items = {split: read_items(run / "world" / f"eval_{split}.jsonl") for split in SPLITS}
        keep = {split: [i.family == args.family for i in its] for split, its in items.items()}
        outcome: dict[str, dict[str, list[bool]]] = {}
        for name in (args.base, args.model):
            answered = refusals(models[name]["path"], items, cfg.eval.max_new_tokens, cfg.eval.batch_size)
            outcome[name] = {split: [r for r, k in zip(answered[split], keep[split]) if k] for split in SPLITS}
            for split, refused in outcome[name].items():
                recorded = models[name]["scores"][split]["by_category"][CATEGORY[args.family]]
                if round(recorded["refusal_rate"] * recorded["n_harmful"]) != sum(refused) or recorded["n_harmful"] != len(refused):
                    print(f"warning: {results} {name} {split}: {sum(refused)} of {len(refused)} refused now, "
                          f"safe.json says {recorded['refusal_rate'] * recorded['n_harmful']:.0f} of {recorded['n_harmful']}")
        for split, label in SPLITS.items():
            base, other = outcome[args.base][split], outcome[args.model][split]
            # one input, its phrasings: the requests whose parameters are the same
            inputs = [json.dumps(i.params, sort_keys=True) for i, k in zip(items[split], keep[split]) if k]
            for into, values in zip(pooled[split], (base, other, [f"{cfg.world.seed}:{x}" for x in inputs])):
                into.extend(values)
            print(row(cfg.world.seed, label, base, other, inputs), flush=True)
    for split, label in SPLITS.items():
        print(row("all", label, *pooled[split]))


if __name__ == "__main__":
    main()
