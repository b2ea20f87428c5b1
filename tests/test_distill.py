"""Distillation on tiny models: token-level divergences fall and the student moves toward the
teacher; on-policy and sequence-level modes run; resume is exact; two tokenizers are refused for
token-level distillation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignkit.config import DistillConfig, load_config
from alignkit.errors import ConfigError
from alignkit.stages.distill import run_distill

from conftest import WORDS, perturbed_copy


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("distill") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Reverse the word {w}."}) + "\n" for w in WORDS))
    return path


@pytest.fixture(scope="module")
def teacher(tiny_dir, tmp_path_factory) -> Path:
    """A teacher that differs from the student: the tiny model with perturbed weights."""
    return perturbed_copy(tiny_dir, tmp_path_factory.mktemp("teacher") / "model", scale=0.2, seed=1)


def distill(student, teacher, prompts, out, *overrides) -> Path:
    cfg = load_config(DistillConfig, None, [f"model.path={student}", f"teacher={teacher}", f"prompts_path={prompts}",
                                            f"output_dir={out}", "log.progress=false", "log.every=1",
                                            "train.batch_size=4", "optim.lr=3e-3", "optim.warmup_ratio=0",
                                            "sampling.max_new_tokens=8", "eval_fraction=0.2", *overrides])
    return run_distill(cfg)


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd"])
def test_token_level_divergence_falls(tiny_dir, teacher, prompts, tmp_path, divergence):
    out = tmp_path / divergence
    distill(tiny_dir, teacher, prompts, out, "train.max_steps=20", "train.eval_every=20", f"divergence={divergence}")
    evals = [r["eval_loss"] for r in rows(out) if "eval_loss" in r]
    assert len(evals) == 2 and evals[-1] < 0.7 * evals[0]
    teacher_rows = (out / "teacher_data.jsonl").read_text().splitlines()
    assert len(teacher_rows) == 20 and json.loads(teacher_rows[0])["messages"][-1]["role"] == "assistant"


def test_the_student_starts_where_the_teacher_is_itself(tiny_dir, prompts, tmp_path):
    """Teacher == student: every divergence is 0 at step 0."""
    out = tmp_path / "same"
    distill(tiny_dir, tiny_dir, prompts, out, "train.max_steps=1", "train.eval_every=1")
    assert rows(out)[0]["eval_loss"] == pytest.approx(0.0, abs=1e-6)


def test_on_policy_and_sequence_modes_run(tiny_dir, teacher, prompts, tmp_path):
    on = tmp_path / "on"
    distill(tiny_dir, teacher, prompts, on, "train.max_steps=4", "on_policy=true")
    assert [r["step"] for r in rows(on) if "loss" in r] == [1, 2, 3, 4]
    seq = tmp_path / "seq"
    model_dir = distill(tiny_dir, teacher, prompts, seq, "train.max_steps=4", "mode=sequence")
    assert (model_dir / "model.safetensors").exists() and any("loss" in r for r in rows(seq))


def test_resume_equals_uninterrupted_on_policy(tiny_dir, teacher, prompts, tmp_path):
    """On-policy sampling draws from the RNG, which the checkpoint restores."""
    args = ["train.max_steps=4", "checkpoint.save_every=2", "checkpoint.keep_last=5", "on_policy=true"]
    out = tmp_path / "r"
    straight = load_file(str(distill(tiny_dir, teacher, prompts, out, *args) / "model.safetensors"))
    shutil.rmtree(out / "model")
    shutil.rmtree(out / "checkpoints" / "step-000004")
    resumed = load_file(str(distill(tiny_dir, teacher, prompts, out, *args, "resume=true") / "model.safetensors"))
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_token_level_refuses_another_tokenizer(tiny_dir, prompts, tmp_path):
    from alignkit.models import build_tiny_model

    other = tmp_path / "other"
    build_tiny_model(other, ["zebra yak walrus vole"] * 50, arch="llama", vocab_size=300, hidden=32, layers=1, heads=2)
    with pytest.raises(ConfigError, match="mode=token needs the teacher's tokenizer"):
        distill(tiny_dir, other, prompts, tmp_path / "x", "train.max_steps=1")


@pytest.mark.parametrize("overrides,message", [
    (["mode=sequence", "on_policy=true"], "on_policy and divergence apply to mode=token"),
    (["jsd_beta=2"], "jsd_beta must be in"),
    (["teacher="], "teacher is required"),
])
def test_bad_settings(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DistillConfig, None, ["model.path=s", "teacher=t", "prompts_path=p", *overrides])


def test_sequence_level_works_across_tokenizers(tiny_dir, prompts, tmp_path):
    """mode=sequence only needs the teacher's text: a teacher with another tokenizer is fine."""
    from alignkit.models import build_tiny_model

    other = tmp_path / "other"
    build_tiny_model(other, ["Reverse the word apple. elppa"] * 50, arch="gpt2", vocab_size=300, hidden=32,
                     layers=1, heads=2)
    out = tmp_path / "seq"
    model_dir = distill(tiny_dir, other, prompts, out, "train.max_steps=2", "mode=sequence", "teacher_decoding=sample")
    assert (model_dir / "model.safetensors").exists()
    assert len((out / "teacher_data.jsonl").read_text().splitlines()) == 20


def test_fit_cuts_the_prompt_first_then_the_response_end():
    """10 tokens, response from index 6, at most 5: the prompt keeps 1 token (5 cut), then the
    response loses its last token. Short enough: unchanged."""
    from alignkit.stages.distill import fit

    assert fit(list(range(10)), 6, 5) == ([5, 6, 7, 8, 9][:5], 1)
    assert fit(list(range(10)), 2, 5) == ([1, 2, 3, 4, 5], 1)
    assert fit(list(range(4)), 2, 5) == ([0, 1, 2, 3], 2)


def test_on_policy_scores_the_sampled_tokens_themselves(tiny_dir, monkeypatch):
    """The student's samples go to the divergence as token ids, not decoded and re-encoded text."""
    from accelerate import Accelerator

    from alignkit.models import load_causal_lm, load_tokenizer
    from alignkit.stages import distill as d

    model, tok = load_causal_lm(tiny_dir), load_tokenizer(tiny_dir)
    cfg = load_config(DistillConfig, None, ["model.path=s", "teacher=t", "prompts_path=p", "sampling.max_new_tokens=6"])
    seen = {}
    real = d.sample_rollout

    def spy(*a, **kw):
        seen["roll"] = real(*a, **kw)
        return seen["roll"]

    monkeypatch.setattr(d, "sample_rollout", spy)
    torch.manual_seed(0)
    seqs, starts = d.student_samples(cfg, Accelerator(cpu=True), model, tok, [[{"role": "user", "content": "hi"}]] * 3)
    roll = seen["roll"]
    for seq, start, resp, keep in zip(seqs, starts, roll.responses, roll.response_mask):
        assert seq[start:] == resp[keep.bool()].tolist()
