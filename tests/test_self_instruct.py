"""`alignkit data self-instruct` with a real tiny model: every proposal kept or dropped exactly as the
rules say (checked again here with the rouge-score package), resuming repeats nothing and ends where
an uninterrupted run ends, and the parsing of the model's continuations."""

from __future__ import annotations

import json
import random
import re

import pytest
from conftest import REVERSE, UPPER, WORDS, write_jsonl
from rouge_score import rouge_scorer

from alignkit.config import load_config
from alignkit.config.data import SelfInstructConfig
from alignkit.data.self_instruct import (HEADER, SeedTask, answer_prompt, instruction_prompt, parse_answer,
                                         parse_instructions, read_seed_tasks, sample_examples)
from alignkit.errors import ConfigError, DataError

POOL = [t.format(w=w) for t in REVERSE + UPPER for w in WORDS] + \
    [f"Name a fruit that tastes like {w}." for w in WORDS] + [f"Count the letters in {w} and {v}." for w, v in
                                                              zip(WORDS, WORDS[3:])]


@pytest.fixture(scope="module")
def lister(tmp_path_factory):
    """The tiny Llama trained for 80 steps on task lists in Self-Instruct's prompt format, so it
    continues a list with lines that look like tasks (some copies of the seeds, some new mixes), and
    on few-shot answer prompts, so it answers with an "Output:" line."""
    from alignkit.config import SFTConfig
    from alignkit.models import build_tiny_model
    from alignkit.stages.sft import run_sft

    rng = random.Random(0)
    docs = [instruction_prompt(rng.sample(POOL, 10))[: -len("Task 11:")] for _ in range(300)]
    tasks = [SeedTask(x, "", x.split()[-1].strip(".")) for x in POOL]  # answer: the task's last word
    docs += [answer_prompt(rng.sample(tasks, 3), t.instruction) + f"Output: {t.output}\n\nTask:"
             for t in rng.choices(tasks, k=150)]
    root = tmp_path_factory.mktemp("lister")
    build_tiny_model(root / "base", docs, arch="llama", hidden=64, layers=2, heads=4)
    data = write_jsonl(root / "docs.jsonl", [{"text": d} for d in docs])
    return run_sft(load_config(SFTConfig, None, [f"model.path={root / 'base'}", f"data.train_path={data}",
                                                 f"output_dir={root / 'sft'}", "train.max_steps=80", "optim.lr=1e-2",
                                                 "train.batch_size=16", "log.progress=false", "data.eval_fraction=0",
                                                 "data.format=text", "data.max_length=256"]))


@pytest.fixture(scope="module")
def seeds_file(tmp_path_factory):
    rows = [{"instruction": x, "input": "", "output": "ok"} for x in POOL[::6]]
    return write_jsonl(tmp_path_factory.mktemp("seeds") / "seeds.jsonl", rows)


def config(model, seeds, out, *extra):
    return load_config(SelfInstructConfig, None, [f"model.path={model}", f"seed_tasks={seeds}", f"output_dir={out}",
                                                  "num_instructions=1000", "max_rounds=4", "batch_size=4",
                                                  "max_new_tokens=48", "max_words=7", "blocked_words=[kiwi]",
                                                  "answers=few_shot", "answer_max_new_tokens=16", "progress=false",
                                                  *extra])


def rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def check_every_verdict(out, seeds_file, max_words=7):
    """Judge every proposal again, in the order the run judged them, with the rouge-score package:
    each against the seeds and the instructions kept before it. Returns the kept ones."""
    from alignkit.safety import load_filter

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    pool = [t.instruction for t in read_seed_tasks(seeds_file)]
    safety = load_filter()
    candidates = rows(out / "candidates.jsonl")
    for c in candidates:  # in the order they were judged: each against the seeds and those kept before it
        text, words = c["instruction"], len(c["instruction"].split())
        if c["reason"] == "cut off":  # only the last line of a prompt's continuation can be cut off
            assert c is [d for d in candidates if (d["round"], d["prompt"]) == (c["round"], c["prompt"])][-1]
            continue
        best = max(scorer.score(p, text)["rougeL"].fmeasure for p in pool)
        expected = ("too short" if words < 3 else "too long" if words > max_words else
                    "names what a text model cannot do" if re.search(r"\bkiwi\b", text.lower()) else
                    "does not start with a letter" if not (text[0].isascii() and text[0].isalpha()) else
                    "unsafe" if safety.check_input(text).blocked else "too similar" if best >= 0.7 else "")
        assert c["reason"] == expected, c
        if c["kept"]:
            assert best < 0.7
            pool.append(text)
    kept = [c["instruction"] for c in candidates if c["kept"]]
    assert len(set(kept)) == len(kept)
    return kept


def test_every_proposal_is_kept_or_dropped_exactly_as_the_rules_say(lister, seeds_file, tmp_path):
    from alignkit.stages.self_instruct import run_self_instruct

    report = run_self_instruct(config(lister, seeds_file, tmp_path / "run"))
    kept = check_every_verdict(tmp_path / "run", seeds_file)
    assert report["kept"] == len(kept) >= 3 and len(set(kept)) == len(kept)
    assert "too similar" in report["dropped"]  # the trained lister copies seeds
    assert report["answers"]["written"] >= 1
    assert [r["instruction"] for r in rows(tmp_path / "run" / "instructions.jsonl")] == kept
    answers = rows(tmp_path / "run" / "answers.jsonl")
    assert [a["instruction"] for a in answers] == kept
    data = rows(tmp_path / "run" / "data.jsonl")
    assert len(data) == report["answers"]["written"] == sum(a["kept"] for a in answers)
    assert all(r["output"] and r["source"] == "self-instruct" for r in data)


def test_a_resumed_run_repeats_nothing_and_ends_where_an_uninterrupted_one_ends(lister, seeds_file, tmp_path):
    from alignkit.stages.self_instruct import run_self_instruct

    run_self_instruct(config(lister, seeds_file, tmp_path / "whole"))
    part = tmp_path / "part"
    run_self_instruct(config(lister, seeds_file, part, "max_rounds=2"))
    first = rows(part / "candidates.jsonl")
    with open(part / "candidates.jsonl", "a") as fh:  # a crash in round 3: a row written, the next cut short
        fh.write(json.dumps({**first[-1], "round": 2}) + "\n" + '{"round": 2, "instr')
    run_self_instruct(config(lister, seeds_file, part))
    resumed = rows(part / "candidates.jsonl")
    assert resumed[:len(first)] == first
    assert resumed == rows(tmp_path / "whole" / "candidates.jsonl")
    kept = [c["instruction"] for c in resumed if c["kept"]]
    assert len(set(kept)) == len(kept)
    assert rows(part / "data.jsonl") == rows(tmp_path / "whole" / "data.jsonl")
    with pytest.raises(ConfigError, match="temperature=1.0.*use another output_dir"):
        run_self_instruct(config(lister, seeds_file, part, "temperature=0.5"))


def test_the_prompt_and_the_parsing_of_continuations():
    prompt = instruction_prompt(["Reverse the word pear.", "Name a fruit."])
    assert prompt == f"{HEADER}Task 1: Reverse the word pear.\nTask 2: Name a fruit.\nTask 3:"
    text = " Write a haiku about rain.\nTask 4: Sort these words.\nTask 5:\nTask 6: List three"
    assert parse_instructions(text, cut_off=True) == [("Write a haiku about rain.", True), ("Sort these words.", True),
                                                      ("List three", False)]
    assert parse_instructions(text + "\n", cut_off=True)[-1] == ("List three", True)
    assert parse_answer("Input: pear\nOutput: raep\n\nTask: next", cut_off=True) == ("pear", "raep", "")
    assert parse_answer("Output: PEAR\nTask: x", cut_off=False) == ("", "PEAR", "")
    assert parse_answer("Output: PEA", cut_off=True) == ("", "", "answer cut off")
    assert parse_answer("Sure! PEAR", cut_off=False)[2] == "no output"
    assert parse_answer("Output:   \nTask: x", cut_off=False)[2] == "empty answer"


def test_examples_mix_seeds_and_generated_tasks():
    rng = random.Random(0)
    seeds, generated = [f"s{i}" for i in range(20)], [f"g{i}" for i in range(5)]
    ex = sample_examples(rng, seeds, generated, 8, 2)
    assert len(ex) == 8 and sum(x.startswith("g") for x in ex) == 2 and len(set(ex)) == 8
    assert sum(x.startswith("g") for x in sample_examples(rng, seeds, [], 8, 2)) == 0


def test_bad_seed_tasks_and_settings_are_named(tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"instruction": "ok", "output": "x"}, {"prompt": "no instruction"}])
    with pytest.raises(DataError, match=r"bad.jsonl, line 2: .*'instruction'"):
        read_seed_tasks(bad)
    si = write_jsonl(tmp_path / "si.jsonl", [{"id": "seed_task_0", "instruction": "Give\nadvice.",
                                             "instances": [{"input": "", "output": "Sleep."}]}])
    assert read_seed_tasks(si)[0].instruction == "Give advice." and read_seed_tasks(si)[0].output == "Sleep."
    with pytest.raises(ConfigError, match="exactly one of model.path and endpoint.url"):
        load_config(SelfInstructConfig, None, ["seed_tasks=world"]).validate("x")
    with pytest.raises(ConfigError, match="prompt_generated"):
        load_config(SelfInstructConfig, None, ["seed_tasks=world", "model.path=m", "prompt_generated=9"]).validate("x")


def test_a_model_behind_alignkit_serve_proposes_and_answers(lister, seeds_file, tmp_path):
    """The endpoint path: instructions through /v1/completions, answers through /v1/chat/completions
    of `alignkit serve` on 127.0.0.1; the same rules judge them."""
    pytest.importorskip("openai")
    pytest.importorskip("uvicorn")
    from test_serve import Running

    from alignkit.serve.app import load_server
    from alignkit.serve.protocol import Limits
    from alignkit.stages.self_instruct import run_self_instruct

    server = load_server(str(lister), name="lister", limits=Limits(max_tokens_cap=64, default_max_tokens=16,
                                                                   context_length=512, max_body_bytes=50_000),
                         max_batch=8, wait_s=0.02, queue_size=64, device="cpu")
    running = Running(server)
    try:
        cfg = load_config(SelfInstructConfig, None, [f"endpoint.url={running.url}", "endpoint.model=lister",
                                                     f"seed_tasks={seeds_file}", f"output_dir={tmp_path / 'run'}",
                                                     "num_instructions=6", "max_rounds=3", "batch_size=4",
                                                     "max_new_tokens=48", "answers=chat", "answer_max_new_tokens=8",
                                                     "progress=false"])
        report = run_self_instruct(cfg)
    finally:
        running.stop()
    kept = check_every_verdict(tmp_path / "run", seeds_file, max_words=150)
    assert report["proposed"] > 0 and report["kept"] == len(kept)
    answers = rows(tmp_path / "run" / "answers.jsonl")
    assert [a["instruction"] for a in answers] == kept
    assert all(a["reason"] in ("", "answer cut off", "empty answer", "unsafe answer") for a in answers)


def test_the_world_seed_tasks_are_right_and_outside_the_held_out_inputs():
    from alignkit.world import safety
    from alignkit.world.datasets import seed_task_rows
    from alignkit.world.tasks import FAMILIES

    rows = seed_task_rows()
    assert len(rows) == 4 * len(FAMILIES) + len(safety.BENIGN) == len({r["instruction"] for r in rows})
    for r in rows:
        if r["family"] == "benign":
            assert r["output"] in safety.BENIGN.values()
            continue
        family, params = FAMILIES[r["family"]], r["params"]
        assert r["instruction"] in [t.format(**params) for t in family.templates[:4]]
        assert family.check(r["output"], params) and not family.held_out_input(params)
