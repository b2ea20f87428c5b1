"""Supervised fine-tuning: causal-LM loss on response tokens only.

setup   accelerator, run dir, tokenizer, data (validated, deduped, tokenised, packed), model + PEFT,
        optimizer and schedule, resume from the newest checkpoint
loop    training.lm_loop.train_loop: one optimizer step per global batch (token-weighted loss over
        the micro-batches, clip, step); metrics, evaluation and checkpoints at their intervals
save    final evaluation, the model (or adapter) as a standard HF directory in output_dir/model
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from alignkit.config import SFTConfig
from alignkit.data import build_sft_data, pack_examples, packing_is_exact
from alignkit.errors import ConfigError, DataError
from alignkit.models import apply_peft, count_parameters, load_causal_lm, load_tokenizer
from alignkit.training.checkpoint import save_final_model
from alignkit.training.lm_loop import finish, resume_step, train_loop
from alignkit.training.metrics import MetricsWriter
from alignkit.training.optim import build_optimizer, build_scheduler
from alignkit.training.plots import plot_metrics
from alignkit.training.run import make_accelerator, prepare_run_dir, quiet_libraries, say
from alignkit.training.seed import seed_everything


def run_sft(cfg: SFTConfig) -> Path:
    """Train, and return the path of the saved model directory."""
    # ---------------------------------------------------------------- setup
    quiet_libraries()
    accelerator = make_accelerator(cfg.train.precision)
    run_dir = prepare_run_dir(cfg.output_dir, cfg, cfg.resume, accelerator.is_main_process)
    accelerator.wait_for_everyone()  # every process has checked the directory before any writes to it
    model_dir = run_dir / "model"
    if cfg.resume and model_dir.is_dir():
        say(accelerator, f"[green]{model_dir} is complete; nothing to resume")
        return model_dir
    seed_everything(cfg.seed)

    tokenizer = load_tokenizer(cfg.model.path, cfg.model.trust_remote_code)
    data = build_sft_data(cfg.data, tokenizer, cfg.seed)
    for line in data.report.lines():
        say(accelerator, f"data {line}")
    if not data.train:
        if accelerator.is_main_process:
            data.report.write(run_dir / "data_report.json")
        raise DataError(f"{cfg.data.train_path}: no training rows left after filtering (see data_report.json)")

    model = load_causal_lm(cfg.model.path, cfg.model.dtype, cfg.model.trust_remote_code, cfg.model.attn_implementation)
    if hasattr(model, "merge_and_unload"):  # an adapter directory: train on base + adapter folded together
        say(accelerator, f"{cfg.model.path} is an adapter; merging it into its base before training")
        model = model.merge_and_unload().requires_grad_(True)
    model.to(accelerator.device)  # so the packing check runs on the device (and kernel) used to train
    packing = resolve_packing(cfg, model, len(tokenizer))
    train_rows = pack_examples(data.train, cfg.data.max_length) if packing else data.train
    eval_rows = pack_examples(data.eval, cfg.data.max_length) if packing else data.eval
    data.report.packing = {"packed": packing, "train_rows": len(train_rows), "eval_rows": len(eval_rows)}
    if accelerator.is_main_process:
        data.report.write(run_dir / "data_report.json")
    model = apply_peft(model, cfg.peft)
    trainable, total = count_parameters(model)
    say(accelerator, f"model {total:,} parameters, {trainable:,} trainable ({cfg.peft.method}); "
                     f"packing {'on' if packing else 'off'}: {len(data.train)} samples in {len(train_rows)} rows")

    world = accelerator.num_processes
    global_size = cfg.train.batch_size * cfg.train.grad_accum * world
    total_steps = cfg.train.max_steps or max(1, math.ceil(cfg.train.epochs * len(train_rows) / global_size))
    if len(train_rows) < global_size:
        say(accelerator, f"[yellow]note: {len(train_rows)} training rows but a global batch of {global_size}: "
                         "every step sees some rows more than once")
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    metrics = MetricsWriter(run_dir, accelerator.is_main_process, cfg.log.tensorboard)

    start = resume_step(cfg, run_dir, accelerator, model, optimizer, scheduler, metrics)

    # ---------------------------------------------------------------- loop
    parts = dict(accelerator=accelerator, model=model, optimizer=optimizer, scheduler=scheduler,
                 eval_rows=eval_rows, pad_id=tokenizer.pad_token_id, run_dir=run_dir, metrics=metrics)
    train_loop(cfg, name="sft", train_rows=train_rows, start=start, total_steps=total_steps, **parts)

    # ---------------------------------------------------------------- save
    finish(cfg, total_steps=total_steps, **parts)
    if accelerator.is_main_process:
        save_final_model(accelerator.unwrap_model(model), tokenizer, model_dir, cfg.model.path)
        say(accelerator, f"[green]saved {model_dir}; curves in {plot_metrics(metrics.path, title='SFT')}")
    accelerator.wait_for_everyone()
    metrics.close()
    return model_dir


def resolve_packing(cfg: SFTConfig, model: torch.nn.Module, vocab_size: int) -> bool:
    """Pack when asked or when auto and a numerical check shows packed samples are masked apart."""
    if cfg.data.packing == "off":
        return False
    if cfg.peft.method == "prefix":
        if cfg.data.packing == "on":
            raise ConfigError("data.packing=on cannot be used with prefix tuning (the prefix is one per row)")
        return False
    exact, problem = packing_is_exact(model, vocab_size)
    if cfg.data.packing == "on" and not exact:
        raise ConfigError(f"data.packing=on, but {type(model).__name__} with attn_implementation="
                          f"{cfg.model.attn_implementation} {problem}; use packing=off or auto")
    return exact
