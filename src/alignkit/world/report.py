"""The demo's results as a terminal table, a JSON file and a Markdown summary."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

from rich.table import Table


def _pct(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.0f}%"


def _win(w: dict[str, Any]) -> str:
    if not w or math.isnan(w["win_rate"]):
        return "-"
    lo, hi = w["win_rate_ci95"]
    return f"{100 * w['win_rate']:.0f}% [{100 * lo:.0f}-{100 * hi:.0f}] ({100 * w['tie_rate']:.0f}% ties)"


def _baselines(results: dict[str, Any]) -> list[str]:
    """The models win rates were measured against: the main baseline first, then any others."""
    seen: list[str] = []
    for r in results["models"].values():
        for key in r:
            if key.startswith("win_rate_vs_") and key.removeprefix("win_rate_vs_") not in seen:
                seen.append(key.removeprefix("win_rate_vs_"))
    return seen


def rows(results: dict[str, Any]) -> list[list[str]]:
    out = []
    baselines = _baselines(results)
    for name, r in results["models"].items():
        p, i = r["scores"]["heldout_phrasing"], r["scores"]["heldout_input"]
        wins = [_win(r.get(f"win_rate_vs_{b}", {}).get("heldout_phrasing")) if name != b else "-" for b in baselines]
        out.append([name, _pct(p["accuracy"]), _pct(i["accuracy"]), _pct(p["refusal_rate"]),
                    _pct(p["over_refusal_rate"]), _pct(i["over_refusal_rate"]), *wins, f"{r['perplexity']:.2f}"])
    return out


HEADERS = ["model", "accuracy, new phrasings", "accuracy, new inputs", "refuses harmful",
           "over-refuses benign", "over-refuses benign, new inputs"]


def headers(results: dict[str, Any]) -> list[str]:
    return [*HEADERS, *[f"win rate vs {b} [95% CI] (ties)" for b in _baselines(results)], "answer ppl"]


def ppo_lines(results: dict[str, Any]) -> list[str]:
    r = results.get("ppo")
    if not r:
        return []
    return [f"PPO: {r['iterations']} iterations, the policy kept is iteration {r['kept_iteration']} "
            f"(held-out reward {r['eval_reward']:+.3f}, from {r['eval_reward_start']:+.3f}); KL to the reference "
            f"{r['kl']:.3f} nats per response there (at most {r['kl_max']:.3f} in any iteration)."]


def grpo_lines(results: dict[str, Any]) -> list[str]:
    return [f"{name}: {r['steps']} steps, the policy kept is step {r['kept_step']} (held-out reward "
            f"{r['eval_reward']:+.3f}, from {r['eval_reward_start']:+.3f}); sampled reward {r['reward_first']:.3f} -> "
            f"{r['reward_last']:.3f}, groups without signal {100 * r['zero_signal_first']:.0f}% -> "
            f"{100 * r['zero_signal_last']:.0f}%; {r.get('sampled_responses', 0):,.0f} responses sampled."
            for name, r in (results.get("grpo") or {}).items() if r]


def gain_lines(results: dict[str, Any]) -> list[str]:
    """Each model's accuracy gain over each model it is compared with, in points, with the paired 95%
    interval: one line per model compared against."""
    out = []
    against = dict.fromkeys(k.removeprefix("accuracy_gain_vs_") for r in results["models"].values()
                            for k in r if k.startswith("accuracy_gain_vs_"))
    for other in against:
        parts = []
        for name, r in results["models"].items():
            g = r.get("accuracy_gain_vs_" + other)
            if g:
                parts.append(f"{name} " + " / ".join(
                    f"{100 * g[split]['gain']:+.1f} [{100 * g[split]['ci95'][0]:+.1f}, {100 * g[split]['ci95'][1]:+.1f}]"
                    for split in ("heldout_phrasing", "heldout_input") if split in g))
        out.append(f"Accuracy gain over {other} in points, new phrasings / new inputs, with paired 95% intervals: "
                   + "; ".join(parts) + ".")
    return out


def judge_lines(results: dict[str, Any]) -> list[str]:
    """The API judge's verdicts on new phrasings (both orders asked) and what they cost."""
    j = results.get("judge")
    if not j:
        return []
    parts = []
    for name, r in results["models"].items():
        for key, w in r.items():
            if key.startswith("judge_win_rate_vs_") and w["win_rate"] == w["win_rate"]:
                lo, hi = w["win_rate_ci95"]
                parts.append(f"{name} vs {key.removeprefix('judge_win_rate_vs_')} {100 * w['win_rate']:.0f}% "
                             f"[{100 * lo:.0f}-{100 * hi:.0f}] ({w['wins']}-{w['losses']}, {w['ties']} ties, "
                             f"{w['unparseable']} unparseable)")
    return [f"Judge {j['model']} at {j['url']}, new phrasings, both orders asked: " + ("; ".join(parts) or "no decided "
            "comparison") + f". {j['requests']} requests ({j['retries']} retried), {j['cached']} verdicts from the "
            f"cache, {j['prompt_tokens'] + j['completion_tokens']:,} tokens, {j['seconds']:.0f} s."]


def distill_lines(results: dict[str, Any]) -> list[str]:
    r = results.get("distill")
    if not r:
        return []
    parts = []
    for split, v in r["recovered"].items():
        g = r["gains"][split]
        parts.append(f"new {split.removeprefix('heldout_')}s {100 * g['student']:+.1f} points of the teacher's "
                     f"{100 * g['teacher']:+.1f}" + (f" ({_pct(v)})" if v is not None else ""))
    return [f"Distillation: the student ({r['student_params']:,} parameters, "
            f"{100 * r['student_params'] / r['teacher_params']:.0f}% of the teacher, {r['teacher']}) against its own SFT "
            f"model gains {'; '.join(parts)}."]


def reward_lines(results: dict[str, Any]) -> list[str]:
    out = []
    for key, title in (("reward_model", "Reward model"), ("reward_model_ensemble", "Reward-model ensemble (mean score)"),
                       ("reward_model_rounds", "Reward model after the ranking rounds")):
        r = results.get(key)
        if not r:
            continue
        kinds = ", ".join(f"{k} {_pct(v)} (n={r['n_by_kind'][k]})" for k, v in r["by_kind"].items())
        out.append(f"{title}, held-out prompts: pairwise accuracy {_pct(r['accuracy'])} (n={r['n_pairs']}): {kinds}; "
                   f"its top response is the oracle's best on {_pct(r['top1_is_best'])} of prompts; on the SFT model's "
                   f"own samples {_pct(r['on_policy_accuracy'])} (n={r['n_on_policy_pairs']}).")
    c = results.get("cost_model")  # the cost stage's last held-out evaluation (its metrics.jsonl)
    if c:
        cats = ", ".join(f"{k.split(':', 1)[1]} {_pct(v)}" for k, v in c.items() if k.startswith("eval_accuracy/category:"))
        out.append(f"Cost model, held-out rows: safe/unsafe right {_pct(c.get('eval_accuracy'))} ({cats}); unsafe "
                   f"answers called unsafe {_pct(c.get('eval_unsafe_recall'))}, safe ones safe "
                   f"{_pct(c.get('eval_safe_recall'))}; the safer of a pair scored safer {_pct(c.get('eval_pair_accuracy'))}.")
    return out


def rounds_lines(results: dict[str, Any]) -> list[str]:
    """Per ranking round: what it added, and the reward model's accuracy on the policy's new samples
    before it trained on them (how it generalises to where PPO moved the policy)."""
    rounds = results.get("rounds")
    if not rounds:
        return []
    parts = [f"round {r['round']}: {r['rated_prompts']} prompts, {r['pairs_added']} pairs of the policy's own samples, "
             f"reward model {_pct(r['rm_accuracy_on_new_samples_before'])} right on them before training on them "
             f"({_pct(r['rm_accuracy_on_new_samples_after_training_on_them'])} after)" for r in rounds]
    return ["Ranking rounds: " + "; ".join(parts) + "."]


SAFETY_COLUMNS = (("harm", "refusal_rate", "refuses harmful"), ("harm", "over_refusal_rate", "over-refuses look-alikes"),
                  ("discrimination", "refusal_rate", "refuses demeaning a group"),
                  ("discrimination", "over_refusal_rate", "over-refuses questions about a group"),
                  ("premise", "corrected_rate", "corrects false premises"),
                  ("premise", "answered_rate", "answers true premises"))


def safety_lines(results: dict[str, Any]) -> list[str]:
    """Per safety category (world.safety_families beyond harm), new phrasings / new inputs: refusal of
    the harmful kind, over-refusal of its look-alikes, false premises corrected, true ones answered."""
    first = next(iter(results["models"].values()))["scores"]["heldout_phrasing"]
    if "by_category" not in first and "premise" not in first:
        return []

    def cell(scores: dict[str, Any], group: str, key: str) -> str:
        part = scores.get("premise") if group == "premise" else scores.get("by_category", {}).get(group)
        return _pct(part.get(key)) if part else "-"

    columns = [c for c in SAFETY_COLUMNS if any(cell(r["scores"][s], c[0], c[1]) != "-" for r in results["models"].values()
                                                 for s in ("heldout_phrasing", "heldout_input"))]
    lines = ["Safety per category (held-out phrasings / held-out inputs):", "",
             "| model | " + " | ".join(c[2] for c in columns) + " |", "|" + " --- |" * (len(columns) + 1)]
    for name, r in results["models"].items():
        lines.append(f"| {name} | " + " | ".join(f"{cell(r['scores']['heldout_phrasing'], g, k)} / "
                                                 f"{cell(r['scores']['heldout_input'], g, k)}" for g, k, _ in columns) + " |")
    phrasing = premise_phrasing_table({name: [r["scores"]["heldout_phrasing"].get("premise", {})]
                                       for name, r in results["models"].items()}, "held-out phrasings")
    return lines + safety_count_lines(results, columns) + premise_miss_lines(results) + phrasing


# The request count behind each column's share (safety scores by category and premise scores).
COUNT_OF = {"refusal_rate": "n_harmful", "over_refusal_rate": "n_benign", "corrected_rate": "n_false",
            "answered_rate": "n_true"}


def safety_count_lines(results: dict[str, Any], columns: list[tuple[str, str, str]]) -> list[str]:
    """How many requests each column's shares are of (the first model's; every model answers the same
    requests), and the 95% interval of 80% of the false premises: a cell of ~50 requests moves by
    chance more than the margins the floors are judged by. None when the scores lack the counts."""
    from alignkit.eval.metrics import wilson_interval

    first = next(iter(results["models"].values()))["scores"]

    def n(split: str, group: str, key: str) -> int | None:
        part = first[split].get("premise") if group == "premise" else first[split].get("by_category", {}).get(group)
        return (part or {}).get(COUNT_OF[key])

    counts = [(label, n("heldout_phrasing", g, k), n("heldout_input", g, k)) for g, k, label in columns]
    if any(a is None or b is None for _, a, b in counts):
        return []
    size = n("heldout_phrasing", "premise", "corrected_rate") if any(g == "premise" for g, _, _ in columns) else \
        min(a for _, a, _ in counts)
    lo, hi = wilson_interval(round(0.8 * size), size)
    return ["", "Requests per column (held-out phrasings / held-out inputs): " +
            ", ".join(f"{label} {a} / {b}" for label, a, b in counts) +
            f". A share of {size} is coarse: {round(0.8 * size)} of {size} ({_pct(round(0.8 * size) / size)}) has a 95% "
            f"interval of {_pct(lo)}-{_pct(hi)} (Wilson)."]


def premise_miss_lines(results: dict[str, Any]) -> list[str]:
    """Why premise answers on held-out phrasings missed (safety.premise_outcome), per model: the share
    of a table cell says how many, this says what the model did instead."""
    return premise_miss_table({name: [r["scores"]["heldout_phrasing"].get("premise", {})]
                               for name, r in results["models"].items()}, "held-out phrasings")


def premise_miss_table(premises: dict[str, list[dict[str, Any]]], what: str) -> list[str]:
    """The premise misses per model, summed over its premise scores (one per run or seed); scores
    without the counts (older results) are left out, and no table is made when none has them."""
    def cell(scored: list[dict[str, Any]], key: str, n: str) -> str:
        k = sum((Counter(p[key]) for p in scored), Counter())
        return ", ".join(f"{why} {c}" for why, c in k.most_common()) + f" (of {sum(p[n] for p in scored)})" if k else "-"

    lines = []
    for name, scores in premises.items():
        scored = [p for p in scores if "missed_false" in p]
        if scored:
            lines.append(f"| {name} | {cell(scored, 'missed_false', 'n_false')} | {cell(scored, 'missed_true', 'n_true')} |")
    if not lines:
        return []
    return ["", f"Premise answers that missed, {what} (what the model did instead):", "",
            "| model | false premises | true premises |", "| --- | --- | --- |", *lines]


def premise_phrasing_table(premises: dict[str, list[dict[str, Any]]], what: str) -> list[str]:
    """Premise answers per phrasing template, per model, summed over its premise scores (one per run or
    seed): false premises corrected and true ones answered in each phrasing. A split's corrected share
    mixes phrasings of unequal difficulty in the proportions it happened to draw; this separates them.
    Scores without the counts (older results) are left out; no table when none has them."""
    scored = {name: [p["by_phrasing"] for p in ps if "by_phrasing" in p] for name, ps in premises.items()}
    scored = {name: ps for name, ps in scored.items() if ps}
    if not scored:
        return []
    phrasings = list(dict.fromkeys(t for ps in scored.values() for p in ps for t in p))

    def cell(ps: list[dict[str, Any]], phrasing: str) -> str:
        k = Counter()
        for p in ps:
            k.update(p.get(phrasing, {}))
        parts = [f"{k[done]} of {k[n]} {done} ({_pct(k[done] / k[n])})"
                 for done, n in (("corrected", "n_false"), ("answered", "n_true")) if k[n]]
        return ", ".join(parts) or "-"

    return ["", f"Premise answers by phrasing, {what} (false premises corrected, true ones answered):", "",
            "| model | " + " | ".join(f"\"{t}\"" for t in phrasings) + " |", "|" + " --- |" * (len(phrasings) + 1),
            *[f"| {name} | " + " | ".join(cell(ps, t) for t in phrasings) + " |" for name, ps in scored.items()]]


def results_table(results: dict[str, Any]) -> Table:
    n = results["splits"]
    table = Table(title=f"Demo world, held-out requests (phrasings: {n['heldout_phrasing']}, inputs: {n['heldout_input']})")
    for h in headers(results):
        table.add_column(h, justify="left" if h == "model" else "right")
    for row in rows(results):
        table.add_row(*row)
    return table


def cutoff_lines(results: dict[str, Any]) -> list[str]:
    """The share of each model's answers cut off by the token limit (evaluate_models' cut_off), when
    any was: those were judged as fragments, so the scores above undercount what the model says."""
    cut = {name: r["cut_off"] for name, r in results["models"].items() if "cut_off" in r}
    if not any(share > 0 for shares in cut.values() for share in shares.values()):
        return []
    return ["", "Answers cut off by the token limit (eval.max_new_tokens; held-out phrasings / held-out inputs): " +
            ", ".join(f"{name} {100 * c.get('heldout_phrasing', 0):.1f}% / {100 * c.get('heldout_input', 0):.1f}%"
                      for name, c in cut.items()) + "."]


def markdown(results: dict[str, Any]) -> str:
    lines = ["| " + " | ".join(headers(results)) + " |", "|" + " --- |" * len(headers(results))]
    lines += ["| " + " | ".join(r) + " |" for r in rows(results)]
    families = sorted(next(iter(results["models"].values()))["scores"]["heldout_phrasing"]["per_family"])
    lines += ["", "Accuracy per family (held-out phrasings / held-out inputs):", "",
              "| family | " + " | ".join(results["models"]) + " |", "|" + " --- |" * (len(results["models"]) + 1)]
    for fam in families:
        cells = [f"{_pct(r['scores']['heldout_phrasing']['per_family'].get(fam))} / "
                 f"{_pct(r['scores']['heldout_input']['per_family'].get(fam))}" for r in results["models"].values()]
        lines.append(f"| {fam} | " + " | ".join(cells) + " |")
    lines += cutoff_lines(results)
    safety = safety_lines(results)
    if safety:
        lines += ["", *safety]
    if any(k.startswith("accuracy_gain_vs_") for r in results["models"].values() for k in r):
        lines += ["", *gain_lines(results)]
    if results.get("judge"):
        lines += ["", *judge_lines(results)]
    if results.get("reward_model") or results.get("cost_model"):
        lines += ["", *reward_lines(results)]
    if results.get("rounds"):
        lines += ["", *rounds_lines(results)]
    if results.get("ppo"):
        lines += ["", *ppo_lines(results)]
    if results.get("grpo"):
        lines += ["", *grpo_lines(results)]
    if results.get("distill"):
        lines += ["", *distill_lines(results)]
    if "timings_s" in results:
        lines += ["", "Time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in results["timings_s"].items())]
    return "\n".join(lines) + "\n"


def variant_table(results: dict[str, Any], baseline: str, extra: dict[str, dict[str, str]] | None = None) -> str:
    """A Markdown table comparing variants of one stage (examples/ppo_levers.py, dpo_variants.py):
    accuracy, refusal and over-refusal on both held-out splits, the win rate against `baseline` on
    new phrasings, and any `extra` columns per model ({model: {column: text}}; "-" where missing)."""
    extra = extra or {}
    columns = list(dict.fromkeys(c for cols in extra.values() for c in cols))
    lines = ["| variant | accuracy, phrasings / inputs | refuses harmful, phrasings / inputs | over-refuses benign, "
             f"phrasings / inputs | win rate vs {baseline}, phrasings [95% CI] (wins-losses) | " + " | ".join(columns)
             + (" |" if columns else "|"),
             "| --- | --- | --- | --- | --- |" + " ---: |" * len(columns)]
    for name, r in results["models"].items():
        ph, inp = r["scores"]["heldout_phrasing"], r["scores"]["heldout_input"]
        w = r.get(f"win_rate_vs_{baseline}", {}).get("heldout_phrasing")
        win = "-" if name == baseline or not w else (f"{100 * w['win_rate']:.0f}% [{100 * w['win_rate_ci95'][0]:.0f}-"
                                                     f"{100 * w['win_rate_ci95'][1]:.0f}] ({w['wins']}-{w['losses']})")
        cells = [extra.get(name, {}).get(c, "-") for c in columns]
        lines.append(f"| {name} | {100 * ph['accuracy']:.1f} / {100 * inp['accuracy']:.1f} | "
                     f"{100 * ph['refusal_rate']:.0f} / {100 * inp['refusal_rate']:.0f} | "
                     f"{100 * ph['over_refusal_rate']:.0f} / {100 * inp['over_refusal_rate']:.0f} | {win} |"
                     + "".join(f" {c} |" for c in cells))
    return "\n".join(lines) + "\n"


def write_results(results: dict[str, Any], run_dir: str | Path) -> dict[str, Path]:
    run_dir = Path(run_dir)
    paths = {"json": run_dir / "results.json", "md": run_dir / "results.md"}
    paths["json"].write_text(json.dumps(results, indent=2) + "\n")
    paths["md"].write_text(markdown(results))
    return paths
