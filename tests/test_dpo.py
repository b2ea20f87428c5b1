"""The DPO stage on a tiny model and the demo world's rankings: ln 2 at the start, it learns every
variant, packing and accumulation are exact, it resumes exactly, LoRA works, bad settings fail clearly."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignkit.config import DPOConfig, WorldConfig, load_config
from alignkit.errors import ConfigError
from alignkit.stages.dpo import run_dpo
from alignkit.world.datasets import write_world_data


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    write_world_data(out, WorldConfig(sft_examples=50, ranking_prompts=80, rl_prompts=40, eval_prompts=20))
    return out


def dpo(model_dir, world_dir, out, *overrides) -> Path:
    cfg = load_config(DPOConfig, None, [f"model.path={model_dir}", f"data.train_path={world_dir / 'rankings.jsonl'}",
                                        f"output_dir={out}", "data.max_length=96", "log.progress=false", "log.every=1",
                                        "train.batch_size=8", "optim.lr=1e-3", "optim.warmup_ratio=0", *overrides])
    return run_dpo(cfg)


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    name = "adapter_model.safetensors" if (model_dir / "adapter_model.safetensors").exists() else "model.safetensors"
    return load_file(str(model_dir / name))


def test_dpo_starts_at_ln2_learns_and_saves_a_transformers_model(tiny_dir, world_dir, tmp_path):
    """Policy == reference at step 0, so every gap is 0: the held-out loss and the first step's loss
    are ln 2 exactly, the KL proxy 0. Training then lifts held-out preference accuracy."""
    out = tmp_path / "dpo"
    model_dir = dpo(tiny_dir, world_dir, out, "train.max_steps=40", "train.eval_every=20")
    metrics = rows(out)
    assert metrics[0]["step"] == 0 and metrics[0]["eval_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert metrics[0]["eval_accuracy"] == 0.5  # every pair ties
    first = metrics[1]
    assert first["step"] == 1 and first["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert first["kl_proxy"] == pytest.approx(0.0, abs=1e-6) and first["margin"] == pytest.approx(0.0, abs=1e-6)
    evals = [r for r in metrics if "eval_accuracy" in r]
    assert len(evals) == 3 and evals[-1]["eval_accuracy"] > 0.7 and evals[-1]["eval_loss"] < math.log(2)
    assert {"eval_accuracy/safety", "eval_accuracy/skills"} <= set(evals[-1])
    train = [r for r in metrics if "loss" in r]
    assert {"reward_chosen", "reward_rejected", "margin", "kl_proxy", "pairs_per_s", "grad_norm"} <= set(train[-1])
    assert train[-1]["margin"] > 0 and train[-1]["kl_proxy"] > 0

    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(model_dir) is not None  # plain transformers loads it
    assert (out / "data_report.json").exists() and (out / "curves.png").exists()


@pytest.mark.parametrize("loss,extra", [("cdpo", ["label_smoothing=0.2"]), ("ipo", []), ("hinge", []),
                                        ("simpo", ["beta=2.0"]), ("orpo", []), ("sigmoid", ["nll_coef=1.0"])])
def test_every_variant_lowers_its_loss(tiny_dir, world_dir, tmp_path, loss, extra):
    """Each loss starts where its formula says (gap 0 for the reference-based ones: cdpo ln 2, ipo
    (0 - 1/0.2)^2 = 25, hinge 1) and falls on the held-out pairs (20 prompts: on 4, one world's data
    let IPO's rise after 12 steps); the reference-free ones log no KL."""
    out = tmp_path / loss
    dpo(tiny_dir, world_dir, out, "train.max_steps=12", "train.eval_every=12", "data.eval_fraction=0.25", f"loss={loss}",
        *extra)
    metrics = rows(out)
    start = {"cdpo": math.log(2), "ipo": 25.0, "hinge": 1.0}
    if loss in start:
        assert metrics[0]["eval_loss"] == pytest.approx(start[loss], abs=1e-5)
    assert metrics[-1]["eval_loss"] < metrics[0]["eval_loss"]
    train = [r for r in metrics if "loss" in r]
    assert ("kl_proxy" in train[-1]) == (loss not in ("simpo", "orpo"))
    if loss in ("orpo", "sigmoid"):  # NLL in the loss: loss = pref + nll
        assert train[0]["loss"] == pytest.approx(train[0]["pref_loss"] + train[0]["nll"], rel=1e-5)


def test_packed_and_padded_batches_give_the_same_log_probs(tiny_dir):
    """collate_responses + sequence_logprobs, packed into shared rows or padded one per row, against
    a plain per-sequence computation of the summed response log-probs."""
    from alignkit.data.collate import collate_responses
    from alignkit.losses.dpo import sequence_logprobs
    from alignkit.models import load_causal_lm

    model = load_causal_lm(tiny_dir).eval()
    gen = torch.Generator().manual_seed(0)
    seqs = [torch.randint(3, 100, (n,), generator=gen).tolist() for n in (9, 5, 12, 7)]
    starts = [4, 2, 10, 1]
    expected = []
    with torch.no_grad():
        for s, start in zip(seqs, starts):
            logp = torch.log_softmax(model(torch.tensor([s])).logits[0, :-1], dim=-1)
            expected.append(sum(float(logp[t - 1, s[t]]) for t in range(start, len(s))))
        for pack in (0, 24):
            batch = collate_responses(seqs, starts, pad_id=0, pack_rows=pack)
            assert batch["input_ids"].shape[0] == (4 if not pack else 2)
            labels, sequence = batch.pop("labels"), batch.pop("sequence")
            sums, counts = sequence_logprobs(model(**batch, use_cache=False).logits, labels, sequence, len(seqs))
            assert counts.tolist() == [len(s) - st for s, st in zip(seqs, starts)]
            assert torch.allclose(sums, torch.tensor(expected), atol=1e-4), (pack, sums, expected)


def test_accumulation_and_packing_do_not_change_training(tiny_dir, world_dir, tmp_path):
    """batch 8 x accumulation 1 (packed) and batch 4 x accumulation 2 (padded) give the same losses and
    weights. Tolerance: Adam at lr 1e-2 turns float rounding in near-zero gradients into steps of up
    to ~1e-4; a different batch would move weights by ~1e-2."""
    args = ["train.max_steps=3", "optim.lr=1e-2"]
    a = weights(dpo(tiny_dir, world_dir, tmp_path / "a", *args))
    b = weights(dpo(tiny_dir, world_dir, tmp_path / "b", *args, "train.batch_size=4", "train.grad_accum=2",
                    "data.packing=off"))
    for key in a:
        assert torch.allclose(a[key], b[key], atol=3e-4), key
    losses = lambda run: [r["loss"] for r in rows(tmp_path / run) if "loss" in r]  # noqa: E731
    assert losses("a") == pytest.approx(losses("b"), abs=1e-5)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_resume_equals_uninterrupted(tiny_dir, world_dir, tmp_path, method):
    """6 steps with a checkpoint at 3; delete what came after step 3 and resume: identical weights
    (the reference log-probs are recomputed from the starting weights, not from the checkpoint)."""
    args = ["train.max_steps=6", "checkpoint.save_every=3", "checkpoint.keep_last=5", f"peft.method={method}",
            "peft.lora_r=4"]
    out = tmp_path / method
    straight = weights(dpo(tiny_dir, world_dir, out, *args))
    shutil.rmtree(out / "model")
    shutil.rmtree(out / "checkpoints" / "step-000006")
    resumed = weights(dpo(tiny_dir, world_dir, out, *args, "resume=true"))
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_lora_starts_at_ln2_and_saves_an_adapter(tiny_dir, world_dir, tmp_path):
    """LoRA's dropout is switched off too, so the adapted policy equals the reference at step 0."""
    out = tmp_path / "lora"
    model_dir = dpo(tiny_dir, world_dir, out, "train.max_steps=4", "peft.method=lora", "peft.lora_r=4",
                    "peft.lora_dropout=0.3")
    assert (model_dir / "adapter_config.json").exists()
    assert rows(out)[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)


def test_a_separate_reference_model(tiny_dir, tiny_dirs, world_dir, tmp_path):
    """reference_path: another model's log-probs are the reference, so the first loss is not ln 2."""
    other = tmp_path / "other"
    shutil.copytree(tiny_dir, other)
    state = load_file(str(other / "model.safetensors"))
    from safetensors.torch import save_file

    save_file({k: v + 0.05 * torch.randn_like(v) for k, v in state.items()}, str(other / "model.safetensors"),
              metadata={"format": "pt"})
    out = tmp_path / "ref"
    dpo(tiny_dir, world_dir, out, "train.max_steps=1", f"reference_path={other}")
    assert abs(rows(out)[0]["loss"] - math.log(2)) > 1e-3


@pytest.mark.parametrize("overrides,message", [
    (["loss=cdpo"], "loss=cdpo needs label_smoothing in"),
    (["label_smoothing=0.1"], "label_smoothing applies to loss=cdpo only"),
    (["loss=orpo", "nll_coef=1"], "loss=orpo already includes the chosen NLL"),
    (["loss=simpo", "reference_path=x"], "loss=simpo uses no reference model"),
    (["beta=0"], "beta must be > 0"),
    (["loss=dpoo"], "dpoo"),
    (["nll_cof=1"], "did you mean 'nll_coef'"),
])
def test_bad_settings_fail_clearly(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DPOConfig, None, ["model.path=m", "data.train_path=d.jsonl", *overrides])


def test_cli_runs_dpo(tiny_dir, world_dir, tmp_path):
    from alignkit.cli import main

    out = tmp_path / "cli"
    code = main(["dpo", f"model.path={tiny_dir}", f"data.train_path={world_dir / 'rankings.jsonl'}",
                 f"output_dir={out}", "train.max_steps=2", "log.progress=false", "data.max_length=96"])
    assert code == 0 and (out / "model" / "model.safetensors").exists()


@pytest.mark.slow  # make test-slow: CI's 15 minutes (see README, Development)
def test_two_processes_equal_one_process_on_the_same_global_batch(tiny_dir, world_dir, tmp_path):
    """DDP on CPU (gloo) through `accelerate launch`: 2 processes x 4 pairs follow the same loss
    trajectory, the same held-out accuracy, and reach the same weights as 1 process x 8 pairs (the
    reference log-probs sharded over the two and summed back). Tolerance as in the SFT test: the
    float summation order differs."""
    import subprocess
    import sys

    common = [f"model.path={tiny_dir}", f"data.train_path={world_dir / 'rankings.jsonl'}", "train.max_steps=3",
              "optim.lr=1e-3", "data.packing=off", "optim.max_grad_norm=0", "log.progress=false", "log.every=1",
              "data.max_length=96", "train.eval_every=3", "optim.warmup_ratio=0"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "alignkit", "dpo"]
    proc = subprocess.run(launch + common + [f"output_dir={tmp_path / 'ddp'}", "train.batch_size=4"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    one_dir = run_dpo(load_config(DPOConfig, None, [*common, f"output_dir={tmp_path / 'one'}", "train.batch_size=8"]))
    one, two = weights(one_dir), weights(tmp_path / "ddp" / "model")
    get = lambda run, key: [r[key] for r in rows(tmp_path / run) if key in r]  # noqa: E731
    assert get("ddp", "loss") == pytest.approx(get("one", "loss"), rel=1e-5)
    assert get("ddp", "eval_accuracy") == pytest.approx(get("one", "eval_accuracy"))
    for key in one:
        assert torch.allclose(one[key], two[key], atol=2e-5), key
