"""Evaluate models on the demo world: the oracle's three axes, win rates, perplexity of the answers.

For each model: greedy answers to every held-out request, scored by the oracle (accuracy overall and
per family, refusal of harmful requests, over-refusal of benign look-alikes), the win rate against
a baseline model judged by the simulated annotator's grades (ties excluded and reported), and the
perplexity of the correct answers given the requests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from alignkit.world.oracle import accuracy_gain, score, win_rate
from alignkit.world.safety import is_safety
from alignkit.world.tasks import Item


def conversations(items: list[Item]) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": item.prompt}] for item in items]


def answer_perplexity(model: Any, tokenizer: Any, items: list[Item], batch_size: int = 64) -> float:
    """exp(mean NLL per token) of the correct answers (and their EOS) given the requests."""
    from alignkit.eval.metrics import perplexity

    return perplexity(model, tokenizer, conversations(items), [i.answer for i in items], batch_size, max_length=512)


def evaluate_models(models: dict[str, str | Path], splits: dict[str, list[Item]], baseline: str,
                    max_new_tokens: int = 24, batch_size: int = 128, also_vs: tuple[str, ...] = (),
                    filters: dict[str, Any] | None = None, judge: Any = None) -> dict[str, Any]:
    """Scores of every model on every split, and win rates against `baseline` on each split (and
    against each model of `also_vs` that was evaluated, for the models after it). `filters` names
    models whose generation runs behind a safety filter (alignkit.safety): blocked requests never
    reach the model and blocked answers are replaced by the refusal message. `judge` (an APIJudge)
    also decides each of those comparisons on the first split, both orders asked."""
    from alignkit.models import load_causal_lm, load_tokenizer
    from alignkit.models.generate import responses_and_cutoffs

    answers: dict[str, dict[str, list[str]]] = {}
    results: dict[str, Any] = {"models": {}, "splits": {name: len(items) for name, items in splits.items()}}
    for name, path in models.items():
        model, tokenizer = load_causal_lm(path), load_tokenizer(path)
        answers[name], cut = {}, {split: [] for split in splits}
        for split, items in splits.items():
            def generate(chats: list) -> list[str]:  # called within this iteration: `split` is this split
                texts, cut[split] = responses_and_cutoffs(model, tokenizer, chats, max_new_tokens, batch_size=batch_size)
                return texts

            if filters and name in filters:
                from alignkit.safety import filtered_responses

                answers[name][split] = filtered_responses(conversations(items), generate, filters[name]).responses
            else:
                answers[name][split] = generate(conversations(items))
        first = next(iter(splits))
        results["models"][name] = {
            "path": str(path),
            "scores": {split: score(items, answers[name][split]) for split, items in splits.items()},
            "perplexity": answer_perplexity(model, tokenizer, splits[first]),
            # answers that reached max_new_tokens before EOS (of those the model generated; a filter's
            # refusals are not): a checker judged a fragment, so a share above ~0 means the budget is short
            "cut_off": {split: sum(flags) / len(flags) if flags else 0.0 for split, flags in cut.items()},
        }
    names = list(models)
    for name in names:
        results["models"][name]["win_rate_vs_" + baseline] = {
            split: win_rate(items, answers[name][split], answers[baseline][split]) for split, items in splits.items()
        }
        for other in also_vs:
            if other in models and other != baseline and names.index(name) > names.index(other):
                results["models"][name]["win_rate_vs_" + other] = {
                    split: win_rate(items, answers[name][split], answers[other][split])
                    for split, items in splits.items()}
        for other in dict.fromkeys((baseline, *also_vs)):
            if other in models and names.index(name) > names.index(other):
                results["models"][name]["accuracy_gain_vs_" + other] = {
                    split: accuracy_gain(items, answers[name][split], answers[other][split])
                    for split, items in splits.items()}
                if judge is not None:
                    results["models"][name]["judge_win_rate_vs_" + other] = judge.win_rate(
                        [item.prompt for item in splits[first]], answers[name][first], answers[other][first])
    if judge is not None:
        results["judge"] = judge.report()
    results["samples"] = {split: [{"prompt": items[i].prompt, "answer": items[i].answer,
                                   **{name: answers[name][split][i] for name in models}}
                                  for i in range(min(8, len(items)))]
                          for split, items in splits.items()}
    return results


def api_judge(ev: Any, run_dir: Path) -> Any:
    """The pipeline eval's API judge (eval.judge_url), or None; verdicts cached in run_dir."""
    if not ev.judge_url:
        return None
    from alignkit.eval.api_judge import open_judge

    return open_judge(ev.judge_url, ev.judge_model, ev.judge_api_key_env, "pairwise", ev.judge_prompt,
                      Path(run_dir) / "judge_cache.jsonl", ev.judge_concurrency, option="eval.judge_api_key_env")


PAIR_KINDS = {  # (kind of the better response, kind of the worse) -> what the pair tests
    ("correct", "verbose"): "style", ("wrong", "verbose_wrong"): "style",  # same answer; concise preferred
    ("correct", "wrong"): "correctness", ("verbose", "wrong"): "correctness",  # right vs a wrong answer
    ("correct", "verbose_wrong"): "correctness", ("verbose", "verbose_wrong"): "correctness",
    ("correct", "off_topic"): "relevance", ("verbose", "off_topic"): "relevance", ("wrong", "off_topic"): "relevance",
    ("correct", "refusal"): "relevance", ("verbose", "refusal"): "relevance", ("wrong", "refusal"): "relevance",
}


def _pair_kind(item: Item, better: str, worse: str) -> str | None:
    if is_safety(item.family):
        return "safety"
    return PAIR_KINDS.get((better, worse))


@torch.no_grad()
def evaluate_reward_model(reward_dir: str | Path | list, items: list[Item], policy_dir: str | Path, seed: int,
                          batch_size: int = 64, samples_per_prompt: int = 4) -> dict[str, Any]:
    """The reward model on held-out prompts: pairwise accuracy by kind of pair (safety; relevance:
    an answer over off-topic text or a needless refusal; correctness: a right answer over a wrong one;
    style: concise over padded) over the world's candidate responses; how often its top candidate is the oracle's best;
    and accuracy on the policy's own sampled responses (on-policy), pairs with different grades only.
    Correctness pairs are also reported by the kinds of their two responses ("verbose>wrong": a padded
    right answer over a bare wrong one), since padding and correctness pull apart there.
    A list of reward model directories is an ensemble, scored by the mean of its members' scores."""
    import random

    from alignkit.models import load_causal_lm, load_tokenizer
    from alignkit.models.generate import generate_responses
    from alignkit.models.reward import load_reward_model, score_conversations
    from alignkit.world.datasets import kinds_for
    from alignkit.world.generate import candidate
    from alignkit.world.oracle import grade

    members = [(load_reward_model(d)[0], load_tokenizer(d)) for d in (reward_dir if isinstance(reward_dir, list)
                                                                     else [reward_dir])]

    def score(prompts: list, responses: list[str]) -> list[float]:
        return (sum(score_conversations(rm, tok, prompts, responses, batch_size=batch_size) for rm, tok in members)
                / len(members)).tolist()

    rng = random.Random(f"{seed}:rm-eval")
    prompts, responses, kinds, spans = [], [], [], []
    for item in items:
        pool = kinds_for(item)
        spans.append(range(len(responses), len(responses) + len(pool)))  # this item's candidates
        for kind in pool:
            prompts.append([{"role": "user", "content": item.prompt}])
            responses.append(candidate(item, kind, rng))
            kinds.append(kind)
    scores = score(prompts, responses)
    by_kind: dict[str, list[float]] = {}
    by_pair: dict[str, list[float]] = {}  # correctness pairs by the two responses' kinds
    top1 = []
    for item, idx in zip(items, spans):
        grades = {i: grade(item, responses[i]) for i in idx}
        best = max(idx, key=lambda i: scores[i])
        top1.append(grades[best] == max(grades.values()))
        for i in idx:
            for j in idx:
                if grades[i] > grades[j]:
                    kind = _pair_kind(item, kinds[i], kinds[j])
                    if kind:
                        by_kind.setdefault(kind, []).append(float(scores[i] > scores[j]))
                    if kind == "correctness":
                        by_pair.setdefault(f"{kinds[i]}>{kinds[j]}", []).append(float(scores[i] > scores[j]))
    policy, policy_tok = load_causal_lm(policy_dir), load_tokenizer(policy_dir)
    torch.manual_seed(seed)
    convs = [[{"role": "user", "content": item.prompt}] for item in items for _ in range(samples_per_prompt)]
    sampled = generate_responses(policy, policy_tok, convs, 24, temperature=1.0, batch_size=batch_size)
    on_scores = score(convs, sampled)
    on_policy = []
    for n, item in enumerate(items):
        span = range(n * samples_per_prompt, (n + 1) * samples_per_prompt)
        g = {i: grade(item, sampled[i]) for i in span}
        on_policy += [float(on_scores[i] > on_scores[j]) for i in span for j in span if g[i] > g[j]]
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    all_pairs = [x for xs in by_kind.values() for x in xs]
    return {"accuracy": mean(all_pairs), "n_pairs": len(all_pairs),
            "by_kind": {k: mean(v) for k, v in sorted(by_kind.items())},
            "n_by_kind": {k: len(v) for k, v in sorted(by_kind.items())},
            "correctness_by_pair": {k: mean(v) for k, v in sorted(by_pair.items())},
            "top1_is_best": mean(top1), "on_policy_accuracy": mean(on_policy), "n_on_policy_pairs": len(on_policy)}


def summarize_distill(results: dict[str, Any], teacher: str, models: dict[str, Path]) -> dict[str, Any]:
    """How much of the teacher's accuracy gain over the student's own SFT model the distilled student
    recovers, per split: (distilled - student SFT) / (teacher - student SFT); and the two sizes."""
    from alignkit.models import load_causal_lm

    acc = lambda name, split: results["models"][name]["scores"][split]["accuracy"]  # noqa: E731
    size = lambda name: sum(p.numel() for p in load_causal_lm(models[name]).parameters())  # noqa: E731
    recovered, gains = {}, {}
    for split in results["splits"]:
        gap = acc(teacher, split) - acc("student-sft", split)
        gains[split] = {"teacher": gap, "student": acc("student-distill", split) - acc("student-sft", split)}
        recovered[split] = gains[split]["student"] / gap if gap > 0 else None
    return {"teacher": teacher, "teacher_params": size(teacher), "student_params": size("student-distill"),
            "recovered": recovered, "gains": gains}


def read_run(metrics_path: Path, train_key: str, kept_best: bool) -> tuple[list, list, list, dict] | None:
    """An RL run's metrics rows: (all, training rows (those with train_key), evaluations, the
    evaluation kept: the best held-out reward, or the last); None without training or evaluations."""
    from alignkit.training.metrics import read_metrics

    rows = read_metrics(metrics_path)
    train = [r for r in rows if train_key in r]
    evals = [r for r in rows if "eval_reward" in r]
    if not train or not evals:
        return None
    return rows, train, evals, max(evals, key=lambda r: r["eval_reward"]) if kept_best else evals[-1]


def summarize_ppo(metrics_path: Path, kept_best: bool) -> dict[str, Any] | None:
    """The PPO run in a few numbers: iterations, the one kept (best held-out reward, or the last),
    its held-out reward and KL to the reference, and the largest KL of any iteration."""
    run = read_run(metrics_path, "kl", kept_best)
    if run is None:
        return None
    _, train, evals, kept = run
    # Iteration 0 is the starting (SFT) policy itself: KL 0. A row's KL is that of its rollouts, taken
    # before its update; the policy kept after iteration k is nearest to the rollouts of k + 1.
    after = next((r for r in train if r["step"] == kept["step"] + 1), train[-1])
    return {"iterations": train[-1]["step"], "kept_iteration": kept["step"], "eval_reward": kept["eval_reward"],
            "eval_reward_start": evals[0]["eval_reward"], "kl": after["kl"] if kept["step"] else 0.0,
            "kl_max": max(r["kl"] for r in train)}


def summarize_grpo(metrics_path: Path, kept_best: bool) -> dict[str, Any] | None:
    """A GRPO run in a few numbers: steps, the one kept (best held-out reward, or the last), its
    held-out reward against the start's, the responses it sampled (dynamic sampling's extra ones
    included), and the share of groups without signal (first and last steps)."""
    run = read_run(metrics_path, "reward", kept_best)
    if run is None:
        return None
    rows, train, evals, kept = run
    return {"steps": max(r["step"] for r in rows), "kept_step": kept["step"], "eval_reward": kept["eval_reward"],
            "eval_reward_start": evals[0]["eval_reward"], "zero_signal_first": train[0]["zero_signal_share"],
            "zero_signal_last": train[-1]["zero_signal_share"], "reward_first": train[0]["reward"],
            "reward_last": train[-1]["reward"], "sampled_responses": sum(r.get("sampled_responses", 0) for r in train)}
