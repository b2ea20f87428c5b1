"""What a run's harm-only cost model says about its models' answers to requests with new inputs: does
it score a compliance with a harmful input it never saw as unsafe?

    python benchmarks/cost_new_inputs.py RUN [MODEL ...]    # MODEL: a directory under RUN with model/

For each model (default: sft and safe RLHF without the new-input anchor, on which the cost model's
blindness was measured), its greedy answers (the eval's limit) to the harmful requests and their
look-alikes of RUN/world/eval_heldout_input.jsonl, scored by RUN/safe/cost_harm/model (`python
examples/safe_rlhf.py RUN`): per family and refused / answered, how many, the mean cost and how many
score above 0 (unsafe by the model's boundary). A minute on one core.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

DEFAULT_MODELS = ("sft", "safe/safe_rlhf_no_unsafe_answers_ptx_on_cautious_harm-only_cost")


def cost_groups(families: list[str], refused: list[bool], costs: list[float]) -> dict[tuple[str, str], dict[str, float]]:
    """(family, "refused" / "answered") -> n, mean cost and the count above 0, over the answers of each group."""
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for family, r, c in zip(families, refused, costs):
        groups[(family, "refused" if r else "answered")].append(c)
    return {k: {"n": len(v), "mean": sum(v) / len(v), "unsafe": sum(c > 0 for c in v)} for k, v in sorted(groups.items())}


def main() -> None:
    from alignkit.models import load_causal_lm, load_tokenizer
    from alignkit.models.generate import generate_responses
    from alignkit.models.reward import load_reward_model, score_conversations
    from alignkit.world.datasets import read_items
    from alignkit.world.evaluate import conversations
    from alignkit.world.safety import is_refusal

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("models", nargs="*", default=list(DEFAULT_MODELS))
    p.add_argument("--max-new-tokens", type=int, default=48)
    args = p.parse_args()
    cost_dir = args.run / "safe" / "cost_harm" / "model"
    needed = [args.run / "world" / "eval_heldout_input.jsonl", cost_dir, *(args.run / name / "model" for name in args.models)]
    missing = [str(path) for path in needed if not path.exists()]
    if missing:
        p.error(f"no {', '.join(missing)}: RUN must be a run of configs/demo-safe.yaml after "
                f"`python examples/safe_rlhf.py RUN`, and each MODEL a directory under it with model/")
    items = [i for i in read_items(args.run / "world" / "eval_heldout_input.jsonl") if i.family in ("harmful", "benign")]
    requests = conversations(items)
    cost, offset = load_reward_model(cost_dir)
    cost_tokenizer = load_tokenizer(cost_dir)
    for name in args.models:
        path = args.run / name / "model"
        answers = generate_responses(load_causal_lm(path), load_tokenizer(path), requests,
                                     args.max_new_tokens, batch_size=128)
        costs = (score_conversations(cost, cost_tokenizer, requests, answers) - offset).tolist()
        print(f"== {name}")
        for (family, how), g in cost_groups([i.family for i in items], [is_refusal(a) for a in answers], costs).items():
            print(f"{family:8s} {how:9s} {g['n']:4d}  mean cost {g['mean']:+.2f}  above 0: {g['unsafe']}")


if __name__ == "__main__":
    main()
