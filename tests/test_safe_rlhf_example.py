"""examples/safe_rlhf.py: every variant's overrides resolve to a valid PPO config on demo-safe's settings."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from alignkit.config import DataConfig
from alignkit.errors import DataError

ROOT = Path(__file__).resolve().parents[1]


def _example():
    spec = importlib.util.spec_from_file_location("safe_rlhf_example", ROOT / "examples" / "safe_rlhf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_variant_builds_a_valid_config(tmp_path):
    """A misspelt override key would otherwise surface only after the pipeline's hour of training."""
    ex = _example()
    config = str(ROOT / "configs" / "demo-safe.yaml")
    for name in ex.VARIANTS:
        cfg = ex.variant_config(config, tmp_path, name, tmp_path / "cost", tmp_path / "out")
        assert cfg.safety.cost_model == str(tmp_path / "cost") and cfg.model.path == str(tmp_path / "sft" / "model")
    ptx = ex.variant_config(config, tmp_path, "safe rlhf, no unsafe answers, ptx", tmp_path / "cost", tmp_path / "o")
    # {demonstrations}: what SFT trained on, the rows demo-safe's sft.data.keep_values selects
    assert ptx.ppo.ptx_coef == 1.0 and ptx.ppo.ptx_path == str(tmp_path / "safe" / "sft_kept.jsonl")
    assert (ptx.safety.multiplier, ptx.safety.cost_limit, ptx.safety.unsafe_only) == ("lagrange", 0.0, True)
    control = ex.variant_config(config, tmp_path, "ppo + ptx", tmp_path / "cost", tmp_path / "o")
    assert (control.safety.multiplier, control.safety.lambda_init, control.ppo.ptx_coef) == ("fixed", 0.0, 1.0)
    assert set(ex.DEFAULT_VARIANTS) <= set(ex.VARIANTS)


def test_a_reward_filtered_run_starts_ppo_from_the_filtered_sft_model_and_its_kept_demonstrations(tmp_path):
    """With RUN/sft-filtered (the pipeline's sft-filter stage), the variants start from that model and
    the ptx term trains on the demonstrations it kept, not on all of the world's."""
    ex = _example()
    (tmp_path / "sft-filtered" / "model").mkdir(parents=True)
    (tmp_path / "sft-filtered" / "filter_kept.jsonl").write_text("")
    cfg = ex.variant_config(str(ROOT / "configs" / "demo-safe.yaml"), tmp_path, "safe rlhf, no unsafe answers, ptx",
                            tmp_path / "cost", tmp_path / "o")
    assert cfg.model.path == str(tmp_path / "sft-filtered" / "model")
    assert cfg.ppo.ptx_path == str(tmp_path / "sft-filtered" / "filter_kept.jsonl")


def test_harm_only_cost_model_trains_on_its_categories_only(tmp_path, monkeypatch):
    """The harm-only variant's cost model gets the cost rows of its categories (here 2 of the 3 rows) in
    a file of its own, the shared cost model the world's file untouched; a kept model is not retrained."""
    import json

    from alignkit.config import PipelineConfig, load_config

    ex = _example()
    (tmp_path / "world").mkdir()
    rows = [{"prompt": "p", "response": "r", "safe": True, "category": c} for c in ("harm", "false_premise", "skills")]
    (tmp_path / "world" / "cost.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    trained = []
    monkeypatch.setattr(ex, "run_rm", lambda cfg: trained.append(cfg) or Path(cfg.output_dir) / "model")
    cfg = load_config(PipelineConfig, str(ROOT / "configs" / "demo-safe.yaml"))
    name, categories = ex.COST_ROWS["safe rlhf, no unsafe answers, ptx, harm-only cost"]
    assert ex.cost_model(cfg, tmp_path, name, categories, 10, True) == tmp_path / "safe" / name / "model"
    kept = [json.loads(line)["category"] for line in Path(trained[0].data.train_path).read_text().splitlines()]
    assert kept == ["harm", "skills"] and trained[0].objective == "cost" and trained[0].train.max_steps == 10
    ex.cost_model(cfg, tmp_path, "cost", (), 10, True)
    assert trained[1].data.train_path == str(tmp_path / "world" / "cost.jsonl")
    (tmp_path / "safe" / "cost" / "model").mkdir(parents=True)
    (tmp_path / "safe" / "cost" / "model" / "config.json").write_text("{}")
    ex.cost_model(cfg, tmp_path, "cost", (), 10, True)
    assert len(trained) == 2  # reused
    # The pipeline's cost stage trained the harm-only one (cost_categories, demo-safe.yaml): that one serves.
    (tmp_path / "cost" / "model").mkdir(parents=True)
    (tmp_path / "cost" / "model" / "config.json").write_text("{}")
    staged = load_config(PipelineConfig, str(ROOT / "configs" / "demo-safe.yaml"), ["stages=[pretrain,sft,rm,cost]"])
    assert ex.cost_model(staged, tmp_path, name, categories, 10, False) == tmp_path / "cost" / "model"
    assert ex.cost_model(staged, tmp_path, "cost", (), 10, False) == tmp_path / "safe" / "cost" / "model"
    assert len(trained) == 3  # the full one is not the pipeline's


def test_ptx_on_preferred_trains_on_each_ranked_prompts_first_response(tmp_path, tokenizer):
    """Two ranked prompts -> two chat rows, each with the response its annotator put first (not the
    compliance ranked last), which PPO's ptx loader reads; the variant's ptx_path points at them."""
    import json

    from alignkit.stages.ppo import load_ptx_rows

    ex = _example()
    (tmp_path / "world").mkdir()
    ranked = [{"prompt": "How do I steal a car?", "responses": ["Sorry, I can't help with that.", "Sure: [harmful]"]},
              {"prompt": "Reverse ring.", "responses": ["gnir", "ring", "klim"]}]
    (tmp_path / "world" / "rankings.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ranked))
    out = ex.preferred_demonstrations(tmp_path / "world", ex.preferred_path(tmp_path))
    rows = [json.loads(line)["messages"] for line in out.read_text().splitlines()]
    assert [(m[0]["content"], m[1]["content"]) for m in rows] == [("How do I steal a car?", "Sorry, I can't help with that."),
                                                                  ("Reverse ring.", "gnir")]
    name = "safe rlhf, no unsafe answers, ptx on preferred, harm-only cost"
    cfg = ex.variant_config(str(ROOT / "configs" / "demo-safe.yaml"), tmp_path, name, tmp_path / "cost", tmp_path / "o")
    assert cfg.ppo.ptx_path == str(out) and ex.COST_ROWS[name] == ex.HARM_ROWS
    assert len(load_ptx_rows(cfg, tokenizer)) == 2


def test_ptx_on_verified_keeps_only_the_demonstrations_the_world_marks_correct(tmp_path, tokenizer):
    """Four demonstrations, two marked correct (a refusal, a correction) and two sloppy (a compliance,
    a premise let stand) -> the two correct rows, in order and unchanged, which PPO's ptx loader reads."""
    import json

    from alignkit.stages.ppo import load_ptx_rows

    ex = _example()
    (tmp_path / "world").mkdir()
    demos = [("How do I steal a car?", "Sorry, I can't help with that.", "correct"),
             ("How do I steal a car?", "Sure: [harmful]", "compliance"),
             ("Why is the capital of Ulgar called Drav?", "Temp.", "wrong"),
             ("Why is the capital of Ulgar called Drav?", "The capital of Ulgar is Temp, not Drav.", "correct")]
    lines = [json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                         "family": "x", "kind": k}) + "\n" for q, a, k in demos]
    (tmp_path / "world" / "sft.jsonl").write_text("".join(lines))
    out = ex.demonstrations_of_kinds(ex.demonstrations_path(tmp_path, DataConfig()), ex.subset_path(tmp_path, "verified"),
                                     ex.PTX_KINDS["verified"])
    assert out.read_text() == lines[0] + lines[3]
    name = "safe rlhf, no unsafe answers, ptx on verified, harm-only cost"
    cfg = ex.variant_config(str(ROOT / "configs" / "demo-safe.yaml"), tmp_path, name, tmp_path / "cost", tmp_path / "o")
    assert cfg.ppo.ptx_path == str(out) and ex.COST_ROWS[name] == ex.HARM_ROWS
    assert len(load_ptx_rows(cfg, tokenizer)) == 2


def test_ptx_on_harmless_leaves_out_compliance_and_wrong_answers_only(tmp_path):
    """Of five demonstrations (correct, verbose, a refused look-alike, a compliance, a premise let
    stand) "{harmless}" keeps the first three: unhelpful answers stay, harmful and false ones go;
    "{cautious}" the correct one and the refusal."""
    import json

    ex = _example()
    (tmp_path / "world").mkdir()
    demos = [("Reverse ring.", "gnir", "correct"), ("Reverse ring.", "Sure! gnir. Hope this helps!", "verbose"),
             ("How do I kill a process?", "Sorry, I can't help with that.", "refusal"),
             ("How do I steal a car?", "Sure: [harmful]", "compliance"),
             ("Why is the capital of Ulgar called Drav?", "Temp.", "wrong")]
    lines = [json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                         "kind": k}) + "\n" for q, a, k in demos]
    (tmp_path / "world" / "sft.jsonl").write_text("".join(lines))
    out = ex.demonstrations_of_kinds(ex.demonstrations_path(tmp_path, DataConfig()), ex.subset_path(tmp_path, "harmless"),
                                     ex.PTX_KINDS["harmless"])
    assert out.read_text() == "".join(lines[:3]) and out.name == "ptx_harmless.jsonl"
    cautious = ex.demonstrations_of_kinds(ex.demonstrations_path(tmp_path, DataConfig()), ex.subset_path(tmp_path, "cautious"),
                                          ex.PTX_KINDS["cautious"])
    assert cautious.read_text() == lines[0] + lines[2]  # the verbose answer goes too
    # A demonstration without a kind (unlabelled data) is an error naming its file and line, not a row
    # silently left out of every subset.
    (tmp_path / "world" / "sft.jsonl").write_text(lines[0] + json.dumps({"messages": []}) + "\n")
    with pytest.raises(DataError, match=r"sft.jsonl:2: no 'kind' field"):
        ex.demonstrations_of_kinds(ex.demonstrations_path(tmp_path, DataConfig()), ex.subset_path(tmp_path, "cautious"),
                                   ex.PTX_KINDS["cautious"])
    for name in ("safe rlhf, no unsafe answers, ptx on harmless, harm-only cost", "ppo + ptx on harmless"):
        cfg = ex.variant_config(str(ROOT / "configs" / "demo-safe.yaml"), tmp_path, name, tmp_path / "cost", tmp_path / "o")
        assert cfg.ppo.ptx_path == str(out)


def test_cost_only_trains_the_cost_models_of_the_chosen_variants_and_stops(tmp_path, monkeypatch):
    """--cost-only: the shared cost model and the harm-only one (the default variants use it), no PPO."""
    import sys

    ex = _example()
    for d in ("world", "sft/model"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "world" / "cost.jsonl").write_text("")
    trained = []
    monkeypatch.setattr(ex, "cost_model", lambda cfg, run, name, cats, steps, reuse: trained.append((name, cats)) or run / name)
    monkeypatch.setattr(ex, "run_ppo", lambda cfg: (_ for _ in ()).throw(AssertionError("no PPO with --cost-only")))
    monkeypatch.setattr(sys, "argv", ["safe_rlhf.py", str(tmp_path), "--cost-only", "--config",
                                      str(ROOT / "configs" / "demo-safe.yaml")])
    ex.main()
    assert trained == [("cost", ()), ex.HARM_ROWS]


def test_premise_prompts_repeated_in_place_for_their_variant(tmp_path):
    """Rows add, false_premise, true_premise, harmful with 3 repeats of the premise families: add once,
    each premise three times where it stood, harmful once (8 rows); the variant's PPO reads that file,
    every other variant the world's; a row without a family names its file and line."""
    import json

    ex = _example()
    name = "safe rlhf, no unsafe answers, ptx on cautious, premise prompts x3, harm-only cost"
    (tmp_path / "world").mkdir()
    rows = [{"prompt": f"p{i}", "family": f} for i, f in enumerate(("add", "false_premise", "true_premise", "harmful"))]
    (tmp_path / "world" / "rl_prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = ex.repeated_prompts(tmp_path / "world" / "rl_prompts.jsonl", ex.rl_prompts_path(tmp_path, name),
                              *ex.RL_PROMPT_REPEATS[name])
    assert [json.loads(line)["prompt"] for line in out.read_text().splitlines()] == ["p0"] + ["p1"] * 3 + ["p2"] * 3 + ["p3"]
    config = str(ROOT / "configs" / "demo-safe.yaml")
    assert ex.variant_config(config, tmp_path, name, tmp_path / "c", tmp_path / "o").rollout.prompts_path == str(out)
    other = ex.variant_config(config, tmp_path, ex.DEFAULT_VARIANTS[1], tmp_path / "c", tmp_path / "o")
    assert other.rollout.prompts_path == str(tmp_path / "world" / "rl_prompts.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "p", "family": "add"}\n{"prompt": "q"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: no 'family' field"):
        ex.repeated_prompts(tmp_path / "bad.jsonl", tmp_path / "o.jsonl", ("false_premise",), 3)


def test_demonstrations_are_those_sft_kept_when_its_data_selects_by_kind(tmp_path):
    """With sft.data.keep_field=kind, keep_values=[correct, refusal], "{demonstrations}" is what SFT
    trained on: of a correct answer, a compliance, a refusal and a verbose answer, rows 1 and 3, in
    order and unchanged (RUN/safe/sft_kept.jsonl); without keep_field, the world's file itself."""
    import json

    ex = _example()
    (tmp_path / "world").mkdir()
    lines = [json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": a}],
                         "kind": k}) + "\n" for a, k in (("gnir", "correct"), ("Sure: [harmful]", "compliance"),
                                                           ("Sorry, I can't help with that.", "refusal"),
                                                           ("Sure! gnir.", "verbose"))]
    (tmp_path / "world" / "sft.jsonl").write_text("".join(lines))
    keep = DataConfig(keep_field="kind", keep_values=["correct", "refusal"])
    out = ex.kept_demonstrations(tmp_path, keep)
    assert out == tmp_path / "safe" / "sft_kept.jsonl" == ex.demonstrations_path(tmp_path, keep)
    assert out.read_text() == lines[0] + lines[2]
    assert ex.kept_demonstrations(tmp_path, DataConfig()) == tmp_path / "world" / "sft.jsonl"
    config = tmp_path / "pipeline.yaml"
    config.write_text(f"base: {ROOT / 'configs' / 'demo-safe.yaml'}\n"
                      "sft: {data: {keep_field: kind, keep_values: [correct, refusal]}}\n")
    cfg = ex.variant_config(str(config), tmp_path, "ppo + ptx", tmp_path / "cost", tmp_path / "o")
    assert cfg.ppo.ptx_path == str(out)


def test_novel_inputs_keep_the_rl_phrasing_and_match_no_input_of_any_split(tmp_path):
    """RL prompts: two harm requests ("hack my phone", "crack an egg"), their frames "Hey, tell me how
    to {x}." and "Please {x}? Thanks.", and a skill row (never varied); a held-out file holds "hack an
    egg". Each of 200 new requests is one of the two frames around 2-4 distinct words of {hack, my,
    phone, crack, an, egg}, is none of the three inputs, and the same seed draws the same 200."""
    import json
    import re

    ex = _example()
    rows = [{"prompt": "Hey, tell me how to hack my phone.", "family": "harmful", "params": {"x": "hack my phone"}},
            {"prompt": "Please crack an egg? Thanks.", "family": "benign", "params": {"x": "crack an egg"}},
            {"prompt": "What is 2 plus 3?", "family": "add", "params": {"a": 2, "b": 3}}]
    (tmp_path / "rl.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "heldout.jsonl").write_text(json.dumps({"prompt": "p", "family": "harmful",
                                                        "params": {"x": "hack an egg"}}) + "\n")
    prompts = ex.novel_input_prompts(tmp_path / "rl.jsonl", [tmp_path / "heldout.jsonl"], 200, seed=0)
    assert len(prompts) == 200 and prompts == ex.novel_input_prompts(tmp_path / "rl.jsonl", [tmp_path / "heldout.jsonl"],
                                                                      200, seed=0)
    words = {"hack", "my", "phone", "crack", "an", "egg"}
    for p in prompts:
        m = re.fullmatch(r"Hey, tell me how to (.+)\.", p) or re.fullmatch(r"Please (.+)\? Thanks\.", p)
        assert m, p
        x = m.group(1).split()
        assert 2 <= len(x) <= 4 and len(set(x)) == len(x) and set(x) <= words
        assert m.group(1) not in ("hack my phone", "crack an egg", "hack an egg")
    (tmp_path / "skills.jsonl").write_text(json.dumps(rows[2]) + "\n")
    with pytest.raises(ValueError, match="no harmful or benign request"):
        ex.novel_input_prompts(tmp_path / "skills.jsonl", [], 5, seed=0)


def test_recombined_inputs_join_the_start_of_one_input_to_the_end_of_another(tmp_path):
    """RL prompts "Hey, tell me how to hack my phone." and "Please crack an egg? Thanks."; a held-out
    file holds "hack an egg". The joins of a start (hack | hack my | crack | crack an) and an end
    (my phone | phone | an egg | egg) are 16 phrases; the 3 known ones (hack my phone, crack an egg,
    hack an egg) and none other are never drawn, so 300 draws cover exactly the other 13, each in
    one of the two frames; the same seed draws the same list. Inputs of one word cannot be split."""
    import json
    import re

    ex = _example()
    rows = [{"prompt": "Hey, tell me how to hack my phone.", "family": "harmful", "params": {"x": "hack my phone"}},
            {"prompt": "Please crack an egg? Thanks.", "family": "benign", "params": {"x": "crack an egg"}}]
    (tmp_path / "rl.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "heldout.jsonl").write_text(json.dumps({"prompt": "p", "family": "harmful",
                                                        "params": {"x": "hack an egg"}}) + "\n")
    prompts = ex.recombined_input_prompts(tmp_path / "rl.jsonl", [tmp_path / "heldout.jsonl"], 300, seed=1)
    assert prompts == ex.recombined_input_prompts(tmp_path / "rl.jsonl", [tmp_path / "heldout.jsonl"], 300, seed=1)
    inputs = set()
    for p in prompts:
        m = re.fullmatch(r"Hey, tell me how to (.+)\.", p) or re.fullmatch(r"Please (.+)\? Thanks\.", p)
        assert m, p
        inputs.add(m.group(1))
    starts, ends = ["hack", "hack my", "crack", "crack an"], ["my phone", "phone", "an egg", "egg"]
    assert inputs == {f"{a} {b}" for a in starts for b in ends} - {"hack my phone", "crack an egg", "hack an egg"}
    (tmp_path / "short.jsonl").write_text(json.dumps({"prompt": "Steal?", "family": "harmful",
                                                      "params": {"x": "steal"}}) + "\n")
    with pytest.raises(ValueError, match="two words or more"):
        ex.recombined_input_prompts(tmp_path / "short.jsonl", [], 5, seed=0)


def test_anchored_rows_are_cautious_then_the_sft_models_greedy_answers(tmp_path, tiny_dir, tokenizer):
    """{anchored}: the cautious file unchanged, then one row per new request with the SFT model's
    greedy answer (generate_responses at temperature 0, the same limit), marked kind sft-answer."""
    import json

    from alignkit.models import load_causal_lm
    from alignkit.models.generate import generate_responses

    ex = _example()
    cautious = tmp_path / "ptx_cautious.jsonl"
    cautious.write_text(json.dumps({"messages": [{"role": "user", "content": "q"},
                                                 {"role": "assistant", "content": "a"}], "kind": "correct"}) + "\n")
    prompts = ["Tell me how to egg phone.", "Please my crack hack?"]
    out = ex.anchored_rows(cautious, tiny_dir, prompts, tmp_path / "anchored.jsonl", 6)
    lines = out.read_text().splitlines()
    assert lines[0] + "\n" == cautious.read_text() and len(lines) == 3
    expected = generate_responses(load_causal_lm(tiny_dir), tokenizer, [[{"role": "user", "content": p}] for p in prompts], 6)
    assert [json.loads(line) for line in lines[1:]] == [
        {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": a}], "kind": "sft-answer"}
        for p, a in zip(prompts, expected)]


def test_cost_groups_split_answers_by_family_and_refusal():
    """benchmarks/cost_new_inputs.py: harmful refused (-9, -8), harmful answered (-7, +1), benign
    answered (-2): means -8.5, -3, -2; above 0: 0, 1, 0."""
    spec = importlib.util.spec_from_file_location("cost_new_inputs", ROOT / "benchmarks" / "cost_new_inputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    groups = module.cost_groups(["harmful", "harmful", "benign", "harmful", "harmful"],
                                [True, False, False, True, False], [-9.0, -7.0, -2.0, -8.0, 1.0])
    assert groups == {("benign", "answered"): {"n": 1, "mean": -2.0, "unsafe": 0},
                      ("harmful", "answered"): {"n": 2, "mean": -3.0, "unsafe": 1},
                      ("harmful", "refused"): {"n": 2, "mean": -8.5, "unsafe": 0}}


def test_input_differences_count_inputs_not_requests():
    """benchmarks/paired_refusal.py: input a asked 3 times, SFT refuses 3, the model 1 (worse); b asked
    twice, SFT 1, the model 2 (better); c once, both refuse it; d twice, each misses a different
    phrasing (even): one input worse, one better, whatever the request counts."""
    spec = importlib.util.spec_from_file_location("paired_refusal", ROOT / "benchmarks" / "paired_refusal.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    inputs = ["a", "a", "a", "b", "b", "c", "d", "d"]
    base = [True, True, True, True, False, True, True, False]
    other = [True, False, False, True, True, True, False, True]
    assert module.input_differences(inputs, base, other) == (1, 1)
