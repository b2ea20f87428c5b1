"""`alignkit data self-instruct`: grow instruction data from seed tasks with a model (Self-Instruct,
Wang et al. 2022, as Alpaca used it).

Setup: seed tasks, the model (local or an OpenAI-compatible endpoint), the safety rules, and what a
stopped run left in output_dir. Loop 1, one round at a time: batch_size prompts, each with
prompt_tasks example instructions (prompt_generated of them from those kept so far), generated
together; every proposed instruction is judged (alignkit.data.self_instruct.check_instruction) and
kept only if it is new (ROUGE-L below the threshold to every seed and kept one), well formed and
safe. Loop 2: an input and output for each kept instruction. Save: data.jsonl (Alpaca rows),
instructions.jsonl, report.json; candidates.jsonl holds every proposal with the reason it was
dropped.

Resuming: after each round the candidates are appended and state.json is replaced atomically; a
restart reads back what state.json counts (a round cut short by a crash is done again) and goes on
with round r's own seed, so it proposes exactly what an uninterrupted run would.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

from alignkit.config.data import SelfInstructConfig
from alignkit.config.loader import to_dict
from alignkit.data.self_instruct import (SeedTask, answer_prompt, check_instruction, instruction_prompt, parse_answer,
                                         parse_instructions, read_seed_tasks, sample_examples)
from alignkit.data.records import write_jsonl_atomic
from alignkit.data.similarity import RougeIndex
from alignkit.errors import ConfigError

# Settings that may change between a run and its resumption (when to stop, how to show it).
FREE = {"output_dir", "num_instructions", "max_rounds", "progress", "endpoint.concurrency", "endpoint.key_env"}


def run_self_instruct(cfg: SelfInstructConfig) -> dict[str, Any]:
    cfg.validate("self-instruct")
    t0 = time.perf_counter()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    seeds = world_seed_tasks() if cfg.seed_tasks == "world" else read_seed_tasks(cfg.seed_tasks)
    state = read_state(out, cfg)
    candidates = read_counted(out / "candidates.jsonl", state["candidates"])
    answers = read_counted(out / "answers.jsonl", state["answers"])
    kept = [c["instruction"] for c in candidates if c["kept"]]
    index = RougeIndex([t.instruction for t in seeds] + kept)
    safety = None
    if cfg.safety_rules != "none":
        from alignkit.safety import load_filter

        safety = load_filter(None if cfg.safety_rules == "default" else cfg.safety_rules)
    lm = open_model(cfg)
    from alignkit.training.progress import ProgressBar

    # Loop 1: propose and judge instructions, a round at a time.
    seed_texts = [t.instruction for t in seeds]
    with ProgressBar(cfg.num_instructions, min(len(kept), cfg.num_instructions), "instructions", cfg.progress) as bar:
        while len(kept) < cfg.num_instructions and state["rounds"] < cfg.max_rounds:
            r = state["rounds"]
            rng = random.Random(f"{cfg.seed}:round:{r}")
            prompts = [instruction_prompt(sample_examples(rng, seed_texts, kept, cfg.prompt_tasks, cfg.prompt_generated))
                       for _ in range(cfg.batch_size)]
            rows = []
            for p, (text, cut_off) in enumerate(lm.complete(prompts, cfg.max_new_tokens, cfg.temperature, cfg.top_p,
                                                            seed=round_seed(cfg.seed, r))):
                for instruction, complete in parse_instructions(text, cut_off):
                    v = check_instruction(instruction, complete, index, min_words=cfg.min_words, max_words=cfg.max_words,
                                          blocked_words=cfg.blocked_words, rouge_threshold=cfg.rouge_threshold,
                                          safety_filter=safety)
                    if v.kept:
                        kept.append(instruction)
                        index.add(instruction)
                    rows.append({"round": r, "prompt": p, "instruction": instruction, "kept": v.kept, "reason": v.reason,
                                 "detail": v.detail, "rouge_l": round(v.rouge_l, 4), "most_similar": v.most_similar})
            append_jsonl(out / "candidates.jsonl", rows)
            candidates += rows
            state.update(rounds=r + 1, candidates=len(candidates))
            write_state(out, state)
            bar.update(min(len(kept), cfg.num_instructions), kept=len(kept), proposed=len(candidates), round=r + 1)

    # Loop 2: an input and an output for every kept instruction not yet answered.
    if cfg.answers != "none":
        with_outputs = [t for t in seeds if t.output] or seeds
        with ProgressBar(len(kept), len(answers), "answers", cfg.progress) as bar:
            for start in range(len(answers), len(kept), cfg.batch_size):
                batch = kept[start:start + cfg.batch_size]
                rows = answer_batch(lm, cfg, batch, with_outputs, start, safety)
                append_jsonl(out / "answers.jsonl", rows)
                answers += rows
                state.update(answers=len(answers))
                write_state(out, state)
                bar.update(len(answers))

    # Save: the data, the kept instructions, the report.
    data = [{"instruction": a["instruction"], "input": a["input"], "output": a["output"], "source": "self-instruct"}
            for a in answers if a["kept"]]
    write_jsonl_atomic(out / "instructions.jsonl", [{"instruction": k} for k in kept])
    if cfg.answers != "none":
        write_jsonl_atomic(out / "data.jsonl", data)
    report = summarize(candidates, answers, cfg, len(seeds), time.perf_counter() - t0)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def round_seed(seed: int, r: int) -> int:
    return seed * 1_000_003 + r * 10_007


def answer_batch(lm: Any, cfg: SelfInstructConfig, batch: list[str], examples: list[SeedTask], start: int,
                 safety: Any) -> list[dict[str, Any]]:
    """Answers to a batch of kept instructions, each judged: cut off, empty, no output, unsafe."""
    seed = round_seed(cfg.seed, -1 - start)
    if cfg.answers == "chat":
        replies = lm.answer(batch, cfg.answer_max_new_tokens, cfg.answer_temperature, seed=seed)
        parsed = [("", text.strip(), "answer cut off" if cut else ("" if text.strip() else "empty answer"))
                  for text, cut in replies]
    else:
        prompts = [answer_prompt(random.Random(f"{cfg.seed}:answer:{start + k}").sample(examples, min(3, len(examples))), x)
                   for k, x in enumerate(batch)]
        parsed = [parse_answer(text, cut) for text, cut in
                  lm.complete(prompts, cfg.answer_max_new_tokens, cfg.answer_temperature, 1.0, seed=seed)]
    rows = []
    for instruction, (given, output, reason) in zip(batch, parsed):
        if not reason and safety is not None and safety.check_output(output).blocked:
            reason = "unsafe answer"
        rows.append({"instruction": instruction, "input": given, "output": output, "kept": not reason, "reason": reason})
    return rows


def summarize(candidates: list[dict], answers: list[dict], cfg: SelfInstructConfig, n_seeds: int,
              seconds: float) -> dict[str, Any]:
    dropped = Counter(c["reason"] for c in candidates if not c["kept"])
    examples: dict[str, list[dict[str, str]]] = {}
    for c in candidates:
        if not c["kept"] and len(examples.setdefault(c["reason"], [])) < 3:
            examples[c["reason"]].append({"instruction": c["instruction"], "detail": c["detail"]})
    kept = [c for c in candidates if c["kept"]]
    report: dict[str, Any] = {
        "seed_tasks": n_seeds, "rounds": max((c["round"] for c in candidates), default=-1) + 1,
        "proposed": len(candidates), "kept": len(kept), "dropped": dict(dropped.most_common()),
        "dropped_examples": examples,
        "kept_rouge_l_to_nearest": {"mean": sum(c["rouge_l"] for c in kept) / len(kept) if kept else 0.0,
                                    "max": max((c["rouge_l"] for c in kept), default=0.0)},
        "rouge_threshold": cfg.rouge_threshold, "seconds": round(seconds, 1)}
    if cfg.answers != "none":
        report["answers"] = {"written": sum(a["kept"] for a in answers),
                             "dropped": dict(Counter(a["reason"] for a in answers if not a["kept"]).most_common())}
    return report


def report_lines(report: dict[str, Any]) -> list[str]:
    drops = ", ".join(f"{n} {reason}" for reason, n in report["dropped"].items()) or "none"
    lines = [f"{report['rounds']} rounds: {report['proposed']} instructions proposed, {report['kept']} kept; "
             f"dropped: {drops}"]
    if "answers" in report:
        a = report["answers"]
        why = ", ".join(f"{n} {reason}" for reason, n in a["dropped"].items()) or "none"
        lines.append(f"answers: {a['written']} written; dropped: {why}")
    return lines


def open_model(cfg: SelfInstructConfig) -> Any:
    from alignkit.models.complete import EndpointLM, LocalLM

    if cfg.endpoint.url:
        e = cfg.endpoint
        return EndpointLM(e.url, e.model, e.key_env, e.concurrency)
    return LocalLM(cfg.model.path, batch_size=cfg.batch_size)


def world_seed_tasks() -> list[SeedTask]:
    from alignkit.world.datasets import seed_task_rows

    return [SeedTask(r["instruction"], r["input"], r["output"]) for r in seed_task_rows()]


# ---- the run directory -----------------------------------------------------------------------

def settings(cfg: SelfInstructConfig) -> dict[str, Any]:
    flat: dict[str, Any] = {}

    def walk(d: dict[str, Any], prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            elif f"{prefix}{k}" not in FREE:
                flat[f"{prefix}{k}"] = v

    walk(to_dict(cfg), "")
    return flat


def read_state(out: Path, cfg: SelfInstructConfig) -> dict[str, Any]:
    path = out / "state.json"
    if not path.exists():
        return {"rounds": 0, "candidates": 0, "answers": 0, "settings": settings(cfg)}
    state = json.loads(path.read_text())
    for key, value in settings(cfg).items():
        if state["settings"].get(key) != value:
            raise ConfigError(f"{out} holds a run made with {key}={state['settings'].get(key)!r}, this config says "
                              f"{value!r}: resume with the same settings or use another output_dir")
    return state


def write_state(out: Path, state: dict[str, Any]) -> None:
    tmp = out / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, out / "state.json")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a crash; state.json does not count it
            break
    return rows


def read_counted(path: Path, n: int) -> list[dict[str, Any]]:
    """The first n rows (what state.json counts); rows after them, from a round a crash cut short,
    are removed from the file so the round's rerun does not follow them."""
    rows = read_jsonl(path)
    if len(rows) < n:
        raise ConfigError(f"{path} has {len(rows)} complete rows but state.json counts {n}: the run directory is damaged")
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if text.count("\n") != n or not text.endswith("\n") and text:
        write_jsonl_atomic(path, rows[:n])
    return rows[:n]


def append_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        fh.flush()
        os.fsync(fh.fileno())


