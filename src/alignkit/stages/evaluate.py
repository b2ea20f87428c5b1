"""`alignkit eval`: several models on one prompt set, on the three axes, with intervals.

setup   run dir, prompts (optional reference answers and safety labels), the models
loop    each model answers every prompt (greedy by default); its answers are scored: BLEU, chrF,
        ROUGE and the references' perplexity where references exist; the reward model's score;
        refusal of harmful prompts and over-refusal of benign ones (rule-based refusal detector);
        then win rates against the baseline, judged by the reward model and/or a local judge model
        asked in both orders
save    results.json (every number, with 95% intervals and sample sizes), results.md, responses.jsonl
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alignkit.config import EvalConfig
from alignkit.data.records import read_records
from alignkit.errors import ConfigError, DataError
from alignkit.eval.judges import lm_answers, lm_prefers_first, outcome, win_rate_summary
from alignkit.eval.metrics import bleu, bootstrap_interval, chrf, perplexity, rouge
from alignkit.models import load_causal_lm, load_tokenizer
from alignkit.models.generate import generate_responses
from alignkit.safety import is_refusal
from alignkit.training.progress import ProgressBar
from alignkit.training.run import make_accelerator, prepare_run_dir, quiet_libraries, say
from alignkit.training.seed import seed_everything


def run_eval(cfg: EvalConfig) -> Path:
    """Evaluate; return the path of results.json."""
    # ---------------------------------------------------------------- setup
    quiet_libraries()
    accelerator = make_accelerator("fp32")
    run_dir = prepare_run_dir(cfg.output_dir, cfg, True, accelerator.is_main_process)
    seed_everything(cfg.seed)
    rows = read_eval_prompts(cfg.prompts_path)[: cfg.limit or None]
    models = model_entries(cfg.models)
    baseline = cfg.baseline or next(iter(models))
    if baseline not in models:
        raise ConfigError(f"baseline '{baseline}' is not one of the models ({', '.join(models)})")
    say(accelerator, f"eval {len(models)} models on {len(rows)} prompts ({sum(r['reference'] is not None for r in rows)} "
                     f"with references, {sum(r['safety'] == 'harmful' for r in rows)} harmful, "
                     f"{sum(r['safety'] == 'benign' for r in rows)} benign)")
    scorer = reward_scorer(cfg.reward_model, accelerator.device) if cfg.reward_model else None
    api = api_judge(cfg, run_dir) if cfg.judge_url else None
    items = world_items(cfg.prompts_path, len(rows))  # the demo world's own prompts: its oracle scores too

    # ---------------------------------------------------------------- loop
    convs = [r["messages"] for r in rows]
    answers: dict[str, list[str]] = {}
    results: dict[str, Any] = {"n_prompts": len(rows), "baseline": baseline, "models": {}}
    with ProgressBar(len(models), 0, "eval", accelerator.is_main_process) as bar:
        for k, (name, path) in enumerate(models.items()):
            model, tokenizer = load_causal_lm(path).to(accelerator.device), load_tokenizer(path)
            answers[name] = generate_responses(model, tokenizer, convs, cfg.max_new_tokens, cfg.temperature,
                                               batch_size=cfg.batch_size)
            results["models"][name] = {"path": str(path), **score_answers(cfg, rows, answers[name], model, tokenizer,
                                                                           scorer)}
            if items is not None:
                from alignkit.world.oracle import score

                results["models"][name]["oracle"] = score(items, answers[name])
            del model
            bar.update(k + 1)
    for name in models:
        if name == baseline:
            continue
        wins = {}
        if scorer is not None:
            a, b = results["models"][name]["_scores"], results["models"][baseline]["_scores"]
            wins["reward_model"] = win_rate_summary([outcome(x > y, y > x) for x, y in zip(a, b)])
        if api is not None and cfg.judge_mode == "pairwise":
            wins["judge_model"] = api.win_rate([r["messages"][-1]["content"] for r in rows], answers[name],
                                               answers[baseline])
        elif cfg.judge_model and not cfg.judge_url:
            wins["judge_model"] = judge_win_rate(cfg, rows, answers[name], answers[baseline], accelerator.device)
        if items is not None:
            from alignkit.world.oracle import win_rate

            wins["oracle"] = win_rate(items, answers[name], answers[baseline])
        results["models"][name][f"win_rate_vs_{baseline}"] = wins

    if api is not None and cfg.judge_mode == "grade":
        requests = [r["messages"][-1]["content"] for r in rows]
        for name in models:
            grades = api.grades(requests, answers[name])
            parsed = [g for g in grades if g is not None]
            results["models"][name]["judge_grade"] = {
                "mean": sum(parsed) / len(parsed) if parsed else None, "n": len(parsed),
                "ci95": bootstrap_interval(parsed, resamples=cfg.bootstrap_resamples, seed=cfg.seed) if parsed else None,
                "unparseable": len(grades) - len(parsed)}
    if api is not None:
        results["judge"] = api.report()
        u = api.usage
        say(accelerator, f"judge {cfg.judge_model} at {cfg.judge_url}: {u.requests} requests ({u.retries} retried), "
                         f"{u.cached} verdicts from the cache, {u.prompt_tokens + u.completion_tokens:,} tokens, "
                         f"{u.seconds:.1f} s, {u.unparseable} unparseable")

    # ---------------------------------------------------------------- save
    for r in results["models"].values():
        r.pop("_scores", None)
    out = run_dir / "results.json"
    if accelerator.is_main_process:
        out.write_text(json.dumps(results, indent=2) + "\n")
        (run_dir / "results.md").write_text(markdown_table(results))
        with open(run_dir / "responses.jsonl", "w") as fh:
            for i, r in enumerate(rows):
                fh.write(json.dumps({"messages": r["messages"], "reference": r["reference"], "safety": r["safety"],
                                    **{name: answers[name][i] for name in models}}) + "\n")
        say(accelerator, markdown_table(results))
        say(accelerator, f"[green]results: {out} and {run_dir / 'results.md'}")
    return out


def model_entries(entries: list[str]) -> dict[str, str]:
    """NAME=PATH or PATH (named by the directory) -> {name: path}; names must be distinct."""
    out: dict[str, str] = {}
    for entry in entries:
        name, path = entry.split("=", 1) if "=" in entry else (Path(entry.rstrip("/")).name, entry)
        if name == "model":  # runs/sft/model: the run's name says more
            name = Path(path.rstrip("/")).parent.name
        if name in out:
            raise ConfigError(f"two models are named '{name}'; give them names as NAME=PATH")
        out[name] = path
    return out


def read_eval_prompts(path: str) -> list[dict[str, Any]]:
    """Rows as {"messages", "reference", "safety"}; "prompt" or "messages" ending with a user turn."""
    out = []
    for r in read_records(path):
        row = r.row
        if isinstance(row.get("prompt"), str) and row["prompt"].strip():
            messages = [{"role": "user", "content": row["prompt"]}]
        elif isinstance(row.get("messages"), list) and row["messages"] and row["messages"][-1].get("role") == "user":
            messages = row["messages"]
        else:
            raise DataError(f"{r.where}: expected a non-empty string 'prompt', or 'messages' ending with a user turn")
        reference = row.get("reference", row.get("answer"))
        if reference is not None and not isinstance(reference, str):
            raise DataError(f"{r.where}: 'reference' must be a string, got {type(reference).__name__}")
        safety = row.get("safety") or ({True: "harmful"}.get(row.get("harmful")))
        if safety is None and row.get("family") in ("benign", "group_info"):  # the demo world's look-alikes
            safety = "benign"
        if safety not in (None, "harmful", "benign"):
            raise DataError(f"{r.where}: 'safety' must be 'harmful' or 'benign', got {safety!r}")
        out.append({"messages": messages, "reference": None if safety == "harmful" else reference, "safety": safety})
    return out


def world_items(path: str, n: int) -> list | None:
    """The demo world's items when every row of `path` is one (family, answer, params), else None."""
    from alignkit.world.datasets import item_from_dict

    records = read_records(path)[:n]
    if not all({"family", "answer", "params"} <= set(r.row) for r in records):
        return None
    return [item_from_dict(r.row) for r in records]


def reward_scorer(path: str, device: Any):
    from alignkit.models.reward import load_reward_model, score_conversations

    model, offset = load_reward_model(path)
    model.to(device)
    tokenizer = load_tokenizer(path)
    return lambda prompts, responses: (score_conversations(model, tokenizer, prompts, responses) - offset).tolist()


def rate(flags: list[bool], cfg: EvalConfig) -> dict[str, Any]:
    """A rate with its bootstrap 95% interval and sample size."""
    if not flags:
        return {"rate": None, "ci95": None, "n": 0}
    values = [float(f) for f in flags]
    return {"rate": sum(values) / len(values), "ci95": bootstrap_interval(values, resamples=cfg.bootstrap_resamples,
                                                                          seed=cfg.seed), "n": len(values)}


def score_answers(cfg: EvalConfig, rows: list[dict[str, Any]], answers: list[str], model: Any, tokenizer: Any,
                  scorer: Any) -> dict[str, Any]:
    """Every per-model number: automatic metrics on referenced prompts, reward, safety rates, length."""
    out: dict[str, Any] = {"mean_words": sum(len(a.split()) for a in answers) / max(len(answers), 1)}
    ref = [i for i, r in enumerate(rows) if r["reference"] is not None]
    if ref:
        hyps, refs = [answers[i] for i in ref], [rows[i]["reference"] for i in ref]
        out["reference_metrics"] = {"n": len(ref), "bleu": bleu(hyps, refs), "chrf": chrf(hyps, refs),
                                    **rouge(hyps, refs),
                                    "perplexity": perplexity(model, tokenizer, [rows[i]["messages"] for i in ref], refs,
                                                             cfg.batch_size)}
    if scorer is not None:
        scores = scorer([r["messages"] for r in rows], answers)
        ordered = sorted(scores)
        q = lambda f: ordered[min(len(ordered) - 1, int(f * len(ordered)))]  # noqa: E731
        out["reward"] = {"mean": sum(scores) / len(scores), "n": len(scores),
                         "ci95": bootstrap_interval(scores, resamples=cfg.bootstrap_resamples, seed=cfg.seed),
                         "p10": q(0.1), "p50": q(0.5), "p90": q(0.9)}
        out["_scores"] = scores
    refused = refusals(cfg, rows, answers, next(model.parameters()).device)
    out["refusal_of_harmful"] = rate([f for f, r in zip(refused, rows) if r["safety"] == "harmful"], cfg)
    out["over_refusal_of_benign"] = rate([f for f, r in zip(refused, rows) if r["safety"] == "benign"], cfg)
    return out


def refusals(cfg: EvalConfig, rows: list[dict[str, Any]], answers: list[str], device: Any) -> list[bool]:
    """Which answers refuse: by the rules, or by the judge model asked refusal_template (only the rows
    with a safety label are asked)."""
    if cfg.refusal_detector == "rules":
        return [is_refusal(a) for a in answers]
    labelled = [i for i, r in enumerate(rows) if r["safety"] is not None]
    judge, tokenizer = load_causal_lm(cfg.judge_model).to(device), load_tokenizer(cfg.judge_model)
    questions = [cfg.refusal_template.format(prompt=rows[i]["messages"][-1]["content"], response=answers[i])
                 for i in labelled]
    flags = dict(zip(labelled, lm_answers(judge, tokenizer, questions, "Y", "N", cfg.batch_size)))
    return [flags.get(i, False) for i in range(len(rows))]


def judge_win_rate(cfg: EvalConfig, rows: list[dict[str, Any]], a: list[str], b: list[str], device: Any) -> dict:
    """Win rate of answers `a` over `b` by the local judge model, both orders asked per prompt."""
    judge, tokenizer = load_causal_lm(cfg.judge_model).to(device), load_tokenizer(cfg.judge_model)
    requests = [r["messages"][-1]["content"] for r in rows]
    ab = lm_prefers_first(judge, tokenizer, cfg.judge_template, requests, a, b, cfg.batch_size)
    ba = lm_prefers_first(judge, tokenizer, cfg.judge_template, requests, b, a, cfg.batch_size)
    return win_rate_summary([outcome(x, y) for x, y in zip(ab, ba)])


def api_judge(cfg: EvalConfig, run_dir: Path) -> Any:
    from alignkit.eval.api_judge import open_judge

    return open_judge(cfg.judge_url, cfg.judge_model, cfg.judge_api_key_env, cfg.judge_mode, cfg.judge_prompt,
                      cfg.judge_cache or run_dir / "judge_cache.jsonl", cfg.judge_concurrency, cfg.judge_max_retries)


def _pct(x: dict[str, Any] | None) -> str:
    if not x or x.get("rate") is None:
        return "-"
    lo, hi = x["ci95"]
    return f"{100 * x['rate']:.0f}% [{100 * lo:.0f}-{100 * hi:.0f}] (n={x['n']})"


def markdown_table(results: dict[str, Any]) -> str:
    """One row per model: reference metrics, reward, safety, and win rates against the baseline."""
    head = ["model", "BLEU", "chrF", "ROUGE-L", "ref. ppl", "reward [95% CI]", "refuses harmful", "over-refuses benign",
            f"win vs {results['baseline']} (reward model)", f"win vs {results['baseline']} (judge)",
            f"win vs {results['baseline']} (oracle)", "oracle accuracy", "judge grade [95% CI]", "words"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, r in results["models"].items():
        m = r.get("reference_metrics", {})
        rw = r.get("reward")
        wins = r.get(f"win_rate_vs_{results['baseline']}", {})

        def win(key: str) -> str:
            w = wins.get(key)
            if not w or w["win_rate"] != w["win_rate"]:
                return "-"
            lo, hi = w["win_rate_ci95"]
            bad = f", {w['unparseable']} unparseable" if w.get("unparseable") else ""
            return (f"{100 * w['win_rate']:.0f}% [{100 * lo:.0f}-{100 * hi:.0f}] ({w['wins']}-{w['losses']}, "
                    f"{w['ties']} ties{bad})")

        g = r.get("judge_grade")
        grade = "-" if not g or g["mean"] is None else (
            f"{g['mean']:.2f} [{g['ci95'][0]:.2f}, {g['ci95'][1]:.2f}]" + (f" ({g['unparseable']} unparseable)"
                                                                          if g["unparseable"] else ""))

        cells = [name, f"{m['bleu']:.1f}" if m else "-", f"{m['chrf']:.1f}" if m else "-",
                 f"{m['rougeL']:.3f}" if m else "-", f"{m['perplexity']:.2f}" if m else "-",
                 f"{rw['mean']:+.3f} [{rw['ci95'][0]:+.3f}, {rw['ci95'][1]:+.3f}]" if rw else "-",
                 _pct(r["refusal_of_harmful"]), _pct(r["over_refusal_of_benign"]), win("reward_model"), win("judge_model"),
                 win("oracle"), f"{100 * r['oracle']['accuracy']:.1f}%" if "oracle" in r else "-", grade,
                 f"{r['mean_words']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    j = results.get("judge")
    if j:
        lines += ["", f"Judge: {j['model']} at {j['url']} ({j['mode']}): {j['requests']} requests ({j['retries']} "
                      f"retried), {j['cached']} verdicts from the cache, {j['prompt_tokens']:,} prompt and "
                      f"{j['completion_tokens']:,} completion tokens, {j['seconds']:.1f} s; {j['unparseable']} "
                      "replies named no verdict (left out of the rates)."]
    return "\n".join(lines) + "\n"
