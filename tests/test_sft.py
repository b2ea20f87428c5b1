"""The SFT stage on a tiny model: it learns, resumes exactly, accumulates exactly, and fails clearly."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignkit.cli import main
from alignkit.config import SFTConfig, load_config
from alignkit.errors import ConfigError
from alignkit.stages.sft import run_sft

from conftest import task_rows, write_jsonl


def sft(model_dir, data, out, *overrides):
    cfg = load_config(SFTConfig, None, [f"model.path={model_dir}", f"data.train_path={data}", f"output_dir={out}",
                                        "log.progress=false", "log.every=1", "data.max_length=64", *overrides])
    return run_sft(cfg)


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    name = "adapter_model.safetensors" if (model_dir / "adapter_model.safetensors").exists() else "model.safetensors"
    return load_file(str(model_dir / name))


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_sft_lowers_heldout_loss_and_reproduces_a_trained_response(tiny_dir, train_file, tmp_path):
    out = tmp_path / "run"
    model_dir = sft(tiny_dir, train_file, out, "train.max_steps=100", "optim.lr=3e-3", "optim.warmup_steps=5",
                    "train.batch_size=4", "data.eval_fraction=0.1", "train.eval_every=20", "log.every=10")
    rows = metrics(out)
    evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
    assert rows[0]["step"] == 0 and len(evals) == 6  # before training, every 20 steps, and at the end
    assert evals[-1] < 0.5 * evals[0]
    train_losses = [r["loss"] for r in rows if "loss" in r]
    assert train_losses[-1] < 0.2 * train_losses[0]
    assert {"loss", "lr", "tokens_per_s", "tokens", "samples", "epoch", "grad_norm"} <= set(rows[1])
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "data_report.json").read_text())
    assert report["train"]["kept"] == 108 and report["eval"]["kept"] == 12
    assert report["packing"]["packed"] and report["packing"]["train_rows"] < 108
    # 100 steps x 4 packed rows; the samples column counts what the rows held
    assert sum(r["samples"] for r in rows if "samples" in r) > 400

    from alignkit.models import load_causal_lm, load_tokenizer
    from alignkit.models.generate import generate_responses

    model, tok = load_causal_lm(model_dir), load_tokenizer(model_dir)
    prompts = [[{"role": "user", "content": r["instruction"]}] for r in task_rows()[:6]]
    answers = generate_responses(model, tok, prompts, max_new_tokens=12)
    expected = [r["output"] for r in task_rows()[:6]]
    assert sum(a == e for a, e in zip(answers, expected)) >= 4, list(zip(answers, expected))


@pytest.mark.parametrize("method", ["full", "lora"])
def test_resume_equals_uninterrupted(tiny_dir, train_file, tmp_path, method):
    """Run 6 steps with a checkpoint at 3; then delete everything after step 3 and resume: the final
    weights are identical. LoRA runs with dropout, so the restored RNG matters."""
    args = ["train.max_steps=6", "checkpoint.save_every=3", "optim.lr=1e-2", "train.batch_size=4",
            f"peft.method={method}", "peft.lora_dropout=0.2", "data.packing=off", "checkpoint.keep_last=5"]
    out = tmp_path / method
    straight = weights(sft(tiny_dir, train_file, out, *args))
    shutil.rmtree(out / "model")
    shutil.rmtree(out / "checkpoints" / "step-000006")
    resumed = weights(sft(tiny_dir, train_file, out, *args, "resume=true"))
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    assert [r["step"] for r in metrics(out) if "loss" in r] == [1, 2, 3, 4, 5, 6]


def test_a_checkpoint_between_metrics_rows_resumes_with_the_same_rows(tiny_dir, train_file, tmp_path):
    """log.every 4 and a checkpoint every 3 of 6 steps: the checkpoint closes the metrics window
    (a row at 3, then 4, then 6), so the run resumed at 3 writes exactly the uninterrupted run's rows."""
    args = ["train.max_steps=6", "checkpoint.save_every=3", "log.every=4", "train.batch_size=4", "data.packing=off",
            "checkpoint.keep_last=5"]
    out = tmp_path / "run"
    sft(tiny_dir, train_file, out, *args)
    straight = [{k: v for k, v in r.items() if k not in ("time", "tokens_per_s", "samples_per_s")}
                for r in metrics(out) if "loss" in r]
    assert [r["step"] for r in straight] == [3, 4, 6]
    shutil.rmtree(out / "model")
    shutil.rmtree(out / "checkpoints" / "step-000006")
    sft(tiny_dir, train_file, out, *args, "resume=true")
    resumed = [{k: v for k, v in r.items() if k not in ("time", "tokens_per_s", "samples_per_s")}
               for r in metrics(out) if "loss" in r]
    assert resumed == straight


def test_gradient_accumulation_matches_a_big_batch(tiny_dir, train_file, tmp_path):
    """Batch 8 x accumulation 1 and batch 2 x accumulation 4 see the same 8 rows per step and
    normalise by the same token count: same losses, and weights equal up to float summation order
    (which Adam's 1/sqrt(v) amplifies a little for near-zero gradients, hence atol 2e-5 at lr 1e-3)."""
    common = ["train.max_steps=3", "optim.lr=1e-3", "data.packing=off", "optim.max_grad_norm=0"]
    big_dir, small_dir = tmp_path / "big", tmp_path / "small"
    big = weights(sft(tiny_dir, train_file, big_dir, *common, "train.batch_size=8", "train.grad_accum=1"))
    small = weights(sft(tiny_dir, train_file, small_dir, *common, "train.batch_size=2", "train.grad_accum=4"))
    big_losses = [r["loss"] for r in metrics(big_dir) if "loss" in r]
    assert big_losses == pytest.approx([r["loss"] for r in metrics(small_dir) if "loss" in r], rel=1e-6)
    for key in big:
        assert torch.allclose(big[key], small[key], atol=2e-5), key


def test_freeze_layers_stage_keeps_lower_weights(tiny_dir, train_file, tmp_path):
    before = load_file(str(tiny_dir / "model.safetensors"))
    after = weights(sft(tiny_dir, train_file, tmp_path / "r", "train.max_steps=3", "optim.lr=1e-2",
                        "peft.freeze_layers=1"))
    for key, value in before.items():
        frozen = key.startswith("model.layers.0.") or key.startswith("model.embed_tokens")
        assert torch.equal(value, after[key]) == frozen, key


def test_lora_stage_saves_adapter_that_chat_and_merge_load(tiny_dir, train_file, tmp_path, monkeypatch, capsys):
    out = sft(tiny_dir, train_file, tmp_path / "lora", "train.max_steps=20", "optim.lr=1e-2", "peft.method=lora",
              "peft.lora_r=4")
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == str(Path(tiny_dir).resolve())
    assert adapter_cfg["r"] == 4
    assert all("lora_" in k for k in weights(out))
    assert any(float(v.abs().sum()) > 0 for k, v in weights(out).items() if "lora_B" in k)  # B moved from 0
    assert main(["merge", str(out), str(tmp_path / "merged")]) == 0
    import io

    from alignkit.models import load_causal_lm, load_tokenizer
    from alignkit.models.generate import generate_responses

    monkeypatch.setattr("sys.stdin", io.StringIO("Reverse the word apple.\n"))
    capsys.readouterr()
    assert main(["chat", str(tmp_path / "merged"), "--max-new-tokens", "5"]) == 0
    merged = tmp_path / "merged"
    (expected,) = generate_responses(load_causal_lm(merged), load_tokenizer(merged),
                                     [[{"role": "user", "content": "Reverse the word apple."}]], 5)
    assert capsys.readouterr().out == expected + "\n"  # piped stdin: the bare reply, one line


def test_prefix_tuning_trains(tiny_dir, train_file, tmp_path):
    out = tmp_path / "prefix"
    sft(tiny_dir, train_file, out, "train.max_steps=15", "optim.lr=3e-2", "peft.method=prefix", "peft.prefix_tokens=4")
    losses = [r["loss"] for r in metrics(out) if "loss" in r]
    assert losses[-1] < losses[0]
    assert (out / "model" / "adapter_config.json").exists()


def test_bf16_mixed_precision_trains(tiny_dir, train_file, tmp_path):
    out = tmp_path / "bf16"
    after = weights(sft(tiny_dir, train_file, out, "train.max_steps=3", "train.precision=bf16", "optim.lr=1e-2"))
    before = load_file(str(tiny_dir / "model.safetensors"))
    assert after["lm_head.weight"].dtype == torch.float32  # fp32 master weights
    assert not torch.equal(after["lm_head.weight"], before["lm_head.weight"])
    losses = [r["loss"] for r in metrics(out) if "loss" in r]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)


def test_logged_lr_is_the_rate_each_step_used(tiny_dir, train_file, tmp_path):
    """Warmup 4 at lr 1e-3: steps 1..4 use 1/4, 2/4, 3/4, 4/4 of it (the scheduler moves after the step)."""
    out = tmp_path / "lr"
    sft(tiny_dir, train_file, out, "train.max_steps=4", "optim.lr=1e-3", "optim.warmup_steps=4", "optim.schedule=constant")
    assert [r["lr"] for r in metrics(out) if "lr" in r] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])


def test_diverged_loss_stops_the_run_before_saving(tiny_dir, train_file, tmp_path):
    from alignkit.models import load_causal_lm, load_tokenizer
    from alignkit.errors import TrainingDiverged

    broken = load_causal_lm(tiny_dir)
    with torch.no_grad():
        broken.lm_head.weight.fill_(float("nan"))
    broken.save_pretrained(tmp_path / "nan")
    load_tokenizer(tiny_dir).save_pretrained(tmp_path / "nan")
    with pytest.raises(TrainingDiverged, match="the loss is nan at step 1"):
        sft(tmp_path / "nan", train_file, tmp_path / "out", "train.max_steps=2")
    assert not (tmp_path / "out" / "model").exists()


def test_resume_without_checkpoint_starts_over_with_clean_metrics(tiny_dir, train_file, tmp_path):
    out = tmp_path / "r"
    sft(tiny_dir, train_file, out, "train.max_steps=3")
    shutil.rmtree(out / "model")  # an attempt that died before its first checkpoint
    sft(tiny_dir, train_file, out, "train.max_steps=3", "resume=true")
    assert [r["step"] for r in metrics(out) if "loss" in r] == [1, 2, 3]


def test_adapter_directory_as_model_path_is_merged_then_trained(tiny_dir, train_file, tmp_path):
    adapter = sft(tiny_dir, train_file, tmp_path / "lora", "train.max_steps=3", "optim.lr=1e-2", "peft.method=lora")
    full = weights(sft(adapter, train_file, tmp_path / "full", "train.max_steps=2", "optim.lr=1e-2"))
    assert not any("lora" in k for k in full) and "lm_head.weight" in full
    again = sft(adapter, train_file, tmp_path / "lora2", "train.max_steps=2", "peft.method=lora")
    from alignkit.models import load_causal_lm

    assert load_causal_lm(again) is not None  # loads through two adapters


def test_second_run_in_same_dir_needs_resume(tiny_dir, train_file, tmp_path):
    sft(tiny_dir, train_file, tmp_path / "r", "train.max_steps=1")
    with pytest.raises(ConfigError, match="already holds a run; set resume=true"):
        sft(tiny_dir, train_file, tmp_path / "r", "train.max_steps=1")
    # resume on a finished run does nothing and returns the model
    assert sft(tiny_dir, train_file, tmp_path / "r", "train.max_steps=1", "resume=true") == tmp_path / "r" / "model"


def test_cli_bad_data_exits_2_naming_the_line(tiny_dir, tmp_path, capsys):
    bad = write_jsonl(tmp_path / "bad.jsonl", [task_rows()[0], {"instruction": "x", "output": ["not", "text"]}])
    code = main(["sft", f"model.path={tiny_dir}", f"data.train_path={bad}", f"output_dir={tmp_path / 'o'}",
                 "log.progress=false"])
    assert code == 2
    assert capsys.readouterr().err.strip() == f"error: {bad}, line 2: field 'output' must be a string, got list"


def test_only_bad_rows_left_is_an_error(tiny_dir, tmp_path):
    from alignkit.errors import DataError

    empty = write_jsonl(tmp_path / "e.jsonl", [{"instruction": "x", "output": ""}])
    with pytest.raises(DataError, match="no training rows left after filtering"):
        sft(tiny_dir, empty, tmp_path / "o", "data.eval_fraction=0")
    assert json.loads((tmp_path / "o" / "data_report.json").read_text())["train"]["dropped"] == {"empty response": 1}


def test_tensorboard_events_written(tiny_dir, train_file, tmp_path):
    out = tmp_path / "tb"
    sft(tiny_dir, train_file, out, "train.max_steps=2", "log.tensorboard=true")
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))


def test_two_processes_equal_one_process_on_the_same_global_batch(tiny_dir, train_file, tmp_path):
    """DDP on CPU (gloo) through `accelerate launch`: 2 processes x batch 4 follow the same loss
    trajectory and reach the same weights as 1 process x batch 8."""
    import subprocess
    import sys

    common = [f"model.path={tiny_dir}", f"data.train_path={train_file}", "train.max_steps=3", "optim.lr=1e-3",
              "data.packing=off", "optim.max_grad_norm=0", "log.progress=false", "log.every=1", "data.max_length=64"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "alignkit", "sft"]
    proc = subprocess.run(launch + common + [f"output_dir={tmp_path / 'ddp'}", "train.batch_size=4"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    one = weights(sft(tiny_dir, train_file, tmp_path / "one", *common[2:], "train.batch_size=8"))
    two = weights(tmp_path / "ddp" / "model")
    losses = lambda d: [r["loss"] for r in metrics(d) if "loss" in r]  # noqa: E731
    assert losses(tmp_path / "ddp") == pytest.approx(losses(tmp_path / "one"), rel=1e-6)
    for key in one:
        assert torch.allclose(one[key], two[key], atol=2e-5), key  # float summation order, as above


def test_the_chosen_chat_template_is_saved_with_the_model(tiny_dir, train_file, tmp_path):
    """data.chat_template=chatml trains with it and the saved tokenizer carries it on (generation and
    later stages render prompts as training did)."""
    from alignkit.data.templates import CHAT_TEMPLATES
    from alignkit.models import load_tokenizer

    model_dir = sft(tiny_dir, train_file, tmp_path / "run", "train.max_steps=1", "data.chat_template=chatml")
    assert load_tokenizer(model_dir).chat_template == CHAT_TEMPLATES["chatml"]


def test_reward_filtered_sft_writes_what_it_kept_and_dropped(tiny_dir, train_file, reward_dir, tmp_path):
    """data.filter_model with the floor at the median score: the kept and dropped rows come back as
    files (with their scores and source lines), they add up to the rows read, every dropped score is
    below the floor and every kept one at or above it, and the data report counts the drops under
    the reason."""
    from alignkit.data.quality import DataReport
    from alignkit.data.score_filter import drop_reason, score_samples
    from alignkit.data.sft import clean_samples, load_samples

    floor = float(score_samples(clean_samples(load_samples(str(train_file), "auto"), "train", DataReport(), True),
                                str(reward_dir), max_length=64).median())
    out = tmp_path / "run"
    sft(tiny_dir, train_file, out, "train.max_steps=2", "train.batch_size=4", f"data.filter_model={reward_dir}",
        f"data.filter_min_score={floor!r}", "data.eval_fraction=0")
    kept = [json.loads(x) for x in (out / "filter_kept.jsonl").read_text().splitlines()]
    dropped = [json.loads(x) for x in (out / "filter_dropped.jsonl").read_text().splitlines()]
    assert len(kept) + len(dropped) == len(task_rows()) and kept and dropped
    assert all(r["score"] >= round(floor, 4) for r in kept) and all(r["score"] <= round(floor, 4) for r in dropped)
    assert {r["where"] for r in kept + dropped} == {f"{train_file}, line {i + 1}" for i in range(len(task_rows()))}
    assert kept[0]["messages"][-1]["role"] == "assistant"
    report = json.loads((out / "data_report.json").read_text())
    assert report["train"]["dropped"] == {drop_reason(floor): len(dropped)} and report["train"]["kept"] == len(kept)
