"""Judges over the OpenAI API: the verdict parsers on fixed replies, `alignkit eval` with judge_url
pointing at `alignkit serve` (a tiny model taught to answer "A" to anything: a judge that always prefers
the first position, which must give only ties), the verdict cache (a second run sends no request), and
retries with backoff against a server that answers 429 before it answers."""

from __future__ import annotations

import json
import threading

import pytest

pytest.importorskip("openai")
pytest.importorskip("uvicorn")

from alignkit.config import EvalConfig, load_config  # noqa: E402
from alignkit.eval.api_judge import APIJudge, parse_choice, parse_grade  # noqa: E402
from alignkit.stages.evaluate import run_eval  # noqa: E402

from conftest import perturbed_copy  # noqa: E402
from test_serve import Running  # noqa: E402


def test_parse_choice_reads_the_asked_format_and_refuses_to_guess():
    assert parse_choice("[[A]]") == "A" and parse_choice("After thought, [[B]].") == "B"
    assert parse_choice("B") == "B" and parse_choice(" a") is None and parse_choice("A.") == "A"
    assert parse_choice("Response B is better.") == "B"
    assert parse_choice("[[A]] or [[B]]") is None  # both named: no verdict
    assert parse_choice("Response A is short; Response B is long.") is None
    assert parse_choice("I cannot decide") is None and parse_choice("") is None


def test_parse_grade_reads_one_rating_from_1_to_10():
    assert parse_grade("[[7]]") == 7.0 and parse_grade("Rating: [[8.5]]") == 8.5 and parse_grade("Rating: 3") == 3.0
    assert parse_grade("6") == 6.0
    assert parse_grade("[[11]]") is None and parse_grade("[[0]]") is None  # outside the scale
    assert parse_grade("[[3]] then [[9]]") is None and parse_grade("good answer") is None


@pytest.fixture(scope="module")
def says_a(tiny_dir, tmp_path_factory):
    """The tiny Llama fine-tuned to answer "A" to any request (60 steps of SFT on such rows)."""
    from alignkit.config import SFTConfig
    from alignkit.stages.sft import run_sft

    root = tmp_path_factory.mktemp("says-a")
    rows = [{"messages": [{"role": "user", "content": f"Question {i}: which is better, {w}?"},
                          {"role": "assistant", "content": "A"}]}
            for i, w in enumerate(["this or that", "red or blue", "one or two", "left or right"] * 16)]
    data = root / "judge.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(SFTConfig, None, [f"model.path={tiny_dir}", f"data.train_path={data}", f"output_dir={root / 'run'}",
                                        "log.progress=false", "data.max_length=96", "data.eval_fraction=0",
                                        "train.max_steps=60", "train.batch_size=8", "optim.lr=5e-3",
                                        "optim.warmup_steps=0"])
    return run_sft(cfg)


@pytest.fixture(scope="module")
def judge_server(says_a):
    from alignkit.serve.app import load_server

    r = Running(load_server(str(says_a), name="says-a", max_batch=16, wait_s=0.01, device="cpu"))
    yield r
    r.stop()


def eval_cfg(tiny_dir, other, prompts, out, url, *extra):
    return load_config(EvalConfig, None, [f"models=[base={tiny_dir},other={other}]", f"prompts_path={prompts}",
                                          f"output_dir={out}", "max_new_tokens=6", "bootstrap_resamples=100",
                                          f"judge_url={url}", "judge_model=says-a", "judge_concurrency=4", *extra])


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    rows = [{"prompt": f"Name a fruit that starts with {c}."} for c in "ABCDEF"]
    path = tmp_path_factory.mktemp("judge-prompts") / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_first_position_judge_over_the_api_gives_only_ties_and_the_cache_asks_once(
        tiny_dir, prompts, judge_server, tmp_path):
    other = perturbed_copy(tiny_dir, tmp_path / "other", scale=0.5, seed=3)
    # the judge really answers "A" to the shipped pairwise prompt (not a stub: a model behind alignkit serve)
    reply = judge_server.client().chat.completions.create(
        model="says-a", messages=[{"role": "user", "content": "Which is better? [[A]] or [[B]]"}], temperature=0,
        max_tokens=4).choices[0].message.content
    assert parse_choice(reply) == "A"
    before = judge_server.server.requests
    out = tmp_path / "eval"
    results = json.loads(run_eval(eval_cfg(tiny_dir, other, prompts, out, judge_server.url)).read_text())
    w = results["models"]["other"]["win_rate_vs_base"]["judge_model"]
    assert (w["wins"], w["losses"], w["ties"], w["unparseable"]) == (0, 0, 6, 0)
    asked = judge_server.server.requests - before
    # both orders of each of 6 pairs; a pair of identical answers is still asked (the judge does not know)
    assert asked == 12 and results["judge"]["requests"] == 12 and results["judge"]["cached"] == 0
    assert len((out / "judge_cache.jsonl").read_text().splitlines()) == 12
    assert "12 requests" in (out / "results.md").read_text()

    again = json.loads(run_eval(eval_cfg(tiny_dir, other, prompts, out, judge_server.url)).read_text())
    assert judge_server.server.requests - before == 12  # the rerun sent nothing
    assert again["judge"]["requests"] == 0 and again["judge"]["cached"] == 12
    assert again["models"]["other"]["win_rate_vs_base"] == results["models"]["other"]["win_rate_vs_base"]


def test_grades_that_name_no_number_are_counted_unparseable(tiny_dir, prompts, judge_server, tmp_path):
    results = json.loads(run_eval(eval_cfg(tiny_dir, tiny_dir, prompts, tmp_path / "grade", judge_server.url,
                                           "judge_mode=grade", "models=[base=" + str(tiny_dir) + "]")).read_text())
    g = results["models"]["base"]["judge_grade"]
    assert g["mean"] is None and g["n"] == 0 and g["unparseable"] == 6  # "A" is no grade: reported, not guessed
    assert results["judge"]["unparseable"] == 6


def test_429_and_5xx_are_retried_with_backoff(tmp_path):
    """A server that answers 429, then 503, then a verdict: one question costs three requests."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from test_serve import free_port

    answers = [429, 503, 200]
    seen = []

    async def chat(request):
        status = answers[len(seen)] if len(seen) < len(answers) else 200
        seen.append(status)
        if status != 200:
            return JSONResponse({"error": {"message": "busy", "type": "x", "param": None, "code": None}}, status)
        return JSONResponse({"id": "1", "object": "chat.completion", "created": 0, "model": "m",
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": "[[B]]"},
                                          "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})

    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])]),
                                       host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    try:
        while not uv.started:
            pass
        judge = APIJudge(f"http://127.0.0.1:{port}/v1", "m", cache_path=tmp_path / "cache.jsonl", backoff_s=0.01)
        assert judge.prefers_first(["q"], ["x"], ["y"]) == [False]
        assert seen == [429, 503, 200] and judge.usage.requests == 3 and judge.usage.retries == 2
        assert judge.usage.prompt_tokens == 5 and judge.usage.completion_tokens == 2
    finally:
        uv.should_exit = True
        thread.join(30)


def test_the_pipeline_eval_asks_the_api_judge_and_reports_it(tiny_dir, judge_server, tmp_path):
    """The world evaluation with a judge: each comparison on the first split, both orders asked; the
    first-position judge again gives only ties, and the report names the judge and its cost."""
    from alignkit.world import sample_items
    from alignkit.world.evaluate import api_judge, evaluate_models
    from alignkit.world.report import markdown
    from alignkit.config.demo import WorldEvalConfig

    other = perturbed_copy(tiny_dir, tmp_path / "other", scale=0.5, seed=3)
    splits = {"heldout_phrasing": sample_items("heldout_phrasing", 5, seed=0),
              "heldout_input": sample_items("heldout_input", 3, seed=0)}
    judge = api_judge(WorldEvalConfig(judge_url=judge_server.url, judge_model="says-a"), tmp_path)
    results = evaluate_models({"base": tiny_dir, "other": other}, splits, "base", max_new_tokens=4, judge=judge)
    w = results["models"]["other"]["judge_win_rate_vs_base"]
    assert (w["wins"], w["losses"], w["ties"], w["unparseable"]) == (0, 0, 5, 0)
    assert results["judge"]["requests"] == 10 and (tmp_path / "judge_cache.jsonl").exists()
    assert "Judge says-a at" in markdown(results)
