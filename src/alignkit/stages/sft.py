"""Supervised fine-tuning: causal-LM loss on response tokens only.

setup   accelerator, run dir, tokenizer, data (validated, deduped, tokenised, packed), model + PEFT
loop    training.lm_loop.train_and_save on the shared step loop (training/loop.py): optimizer and
        schedule, resume from the newest checkpoint, one optimizer step per global batch
        (token-weighted loss over the micro-batches, clip, step), metrics, evaluation and
        checkpoints at their intervals
save    (same call) final evaluation, the model (or adapter) as a standard HF directory in
        output_dir/model, training curves
"""

from __future__ import annotations

from pathlib import Path

from alignkit.config import SFTConfig
from alignkit.data import build_sft_data, pack_examples
from alignkit.data.packing import resolve_packing
from alignkit.data.records import write_jsonl_atomic
from alignkit.data.templates import choose_chat_template
from alignkit.errors import DataError
from alignkit.models import apply_peft, count_parameters, load_tokenizer
from alignkit.models.loading import is_adapter_dir, load_policy
from alignkit.training import engine
from alignkit.training.lm_loop import train_and_save
from alignkit.training.run import begin_stage, say


KEPT_FILE, DROPPED_FILE = "filter_kept.jsonl", "filter_dropped.jsonl"  # with data.filter_model


def run_sft(cfg: SFTConfig) -> Path:
    """Train, and return the path of the saved model directory."""
    # ---------------------------------------------------------------- setup
    accelerator, run_dir, model_dir = begin_stage(cfg, "sft")
    if model_dir is None:
        return run_dir / "model"

    tokenizer = load_tokenizer(cfg.model.path, cfg.model.trust_remote_code)
    choose_chat_template(tokenizer, cfg.data.chat_template)
    data = build_sft_data(cfg.data, tokenizer, cfg.seed)
    for line in data.report.lines():
        say(accelerator, f"data {line}")
    if not data.train:
        if accelerator.is_main_process:
            data.report.write(run_dir / "data_report.json")
        raise DataError(f"{cfg.data.train_path}: no training rows left after filtering (see data_report.json)")

    if is_adapter_dir(cfg.model.path):  # train on base + adapter folded together
        say(accelerator, f"{cfg.model.path} is an adapter; merging it into its base before training")
    model = load_policy(cfg.model).to(accelerator.device)  # so the packing check runs on the device (and kernel) used to train
    with engine.gathered_parameters(accelerator, model):  # a forward pass: whole weights under ZeRO-3
        packing = resolve_packing(cfg, model, len(tokenizer))
    train_rows = pack_examples(data.train, cfg.data.max_length) if packing else data.train
    eval_rows = pack_examples(data.eval, cfg.data.max_length) if packing else data.eval
    data.report.packing = {"packed": packing, "train_rows": len(train_rows), "eval_rows": len(eval_rows)}
    if accelerator.is_main_process:
        data.report.write(run_dir / "data_report.json")
        if data.scored:  # reward-filtered: what was kept and what was dropped, each row with its score
            write_jsonl_atomic(run_dir / KEPT_FILE, [r for r in data.scored if r["kept"]])
            write_jsonl_atomic(run_dir / DROPPED_FILE, [r for r in data.scored if not r["kept"]])
    model = apply_peft(model, cfg.peft)
    trainable, total = count_parameters(model)
    say(accelerator, f"model {total:,} parameters, {trainable:,} trainable ({cfg.peft.method}); "
                     f"packing {'on' if packing else 'off'}: {len(data.train)} samples in {len(train_rows)} rows")

    # ---------------------------------------------------------------- loop and save
    return train_and_save(cfg, name="sft", accelerator=accelerator, model=model, tokenizer=tokenizer,
                          train_rows=train_rows, eval_rows=eval_rows, run_dir=run_dir, base_model_path=cfg.model.path)
