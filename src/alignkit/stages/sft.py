"""Supervised fine-tuning: causal-LM loss on response tokens only.

setup   accelerator, run dir, tokenizer, data (validated, deduped, tokenised, packed), model + PEFT,
        optimizer and schedule, resume from the newest checkpoint
loop    one optimizer step per global batch: token-weighted loss over the micro-batches, clip, step;
        metrics, evaluation and checkpoints at their intervals
save    final evaluation, the model (or adapter) as a standard HF directory in output_dir/model
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from alignkit.config import SFTConfig
from alignkit.data import build_sft_data, collate, pack_examples, packing_is_exact
from alignkit.errors import ConfigError, DataError
from alignkit.losses import sequence_nll
from alignkit.models import apply_peft, count_parameters, load_causal_lm, load_tokenizer
from alignkit.training.batching import global_batch, micro_batches, shard
from alignkit.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, save_final_model
from alignkit.training.metrics import MetricsWriter, truncate_metrics
from alignkit.training.optim import build_optimizer, build_scheduler
from alignkit.training.plots import plot_metrics
from alignkit.training.progress import ProgressBar
from alignkit.training.run import make_accelerator, prepare_run_dir, quiet_libraries, reduce_sum, say
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
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    metrics = MetricsWriter(run_dir, accelerator.is_main_process, cfg.log.tensorboard)

    start = 0
    ckpt = latest_checkpoint(run_dir) if cfg.resume else None
    if ckpt is not None:
        start = load_checkpoint(ckpt, accelerator.unwrap_model(model), optimizer, scheduler)["step"]
        if accelerator.is_main_process:
            truncate_metrics(metrics.path, start)
        say(accelerator, f"resumed from {ckpt} at step {start}")
    elif cfg.train.eval_every and eval_rows:
        metrics.write(0, **evaluate(model, eval_rows, cfg, tokenizer.pad_token_id, accelerator))

    # ---------------------------------------------------------------- loop
    pad_id = tokenizer.pad_token_id
    window = new_window()
    with ProgressBar(total_steps, start, "sft", cfg.log.progress and accelerator.is_main_process) as bar:
        for step in range(start, total_steps):
            model.train()
            indices = global_batch(len(train_rows), step, global_size, cfg.seed)
            mine = micro_batches(indices, cfg.train.batch_size, cfg.train.grad_accum, accelerator.process_index, world)
            batches = [collate([train_rows[i] for i in mb], pad_id) for mb in mine]
            # Normalise by the labelled tokens of the whole global batch, so any split into
            # micro-batches and processes gives the same gradient (DDP averages, hence x world).
            local_tokens = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
            (global_tokens,) = reduce_sum(accelerator, local_tokens)
            step_nll = 0.0
            for k, batch in enumerate(batches):
                sync = nullcontext() if k == len(batches) - 1 else accelerator.no_sync(model)
                with sync, accelerator.autocast():
                    batch = {key: v.to(accelerator.device) for key, v in batch.items()}
                    labels = batch.pop("labels")
                    logits = model(**batch, use_cache=False).logits
                    nll_sum, _ = sequence_nll(logits, labels)
                    loss = nll_sum.sum() * world / max(global_tokens, 1.0)
                    accelerator.backward(loss)
                step_nll += float(nll_sum.detach().sum())
            grad_norm = None
            if cfg.optim.max_grad_norm > 0:
                grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            done = step + 1
            window["nll"] += step_nll
            window["tokens"] += local_tokens
            window["seen"] += sum(len(train_rows[i]) for mb in mine for i in mb)  # useful (non-pad) tokens
            window["samples"] += sum(getattr(train_rows[i], "num_samples", 1) for mb in mine for i in mb)
            if done % cfg.log.every == 0 or done == total_steps:
                nll, tokens, seen, samples = reduce_sum(accelerator, window["nll"], window["tokens"], window["seen"],
                                                        window["samples"])
                elapsed = time.perf_counter() - window["t0"]
                # tokens / samples: what the steps since the last row trained on, all processes.
                row = {"loss": nll / max(tokens, 1.0), "lr": scheduler.get_last_lr()[0],
                       "tokens_per_s": seen / elapsed, "tokens": int(seen), "samples": int(samples),
                       "epoch": done * global_size / len(train_rows)}
                if grad_norm is not None:
                    row["grad_norm"] = grad_norm
                metrics.write(done, **row)
                bar.update(done, loss=row["loss"], lr=row["lr"], tok_s=round(row["tokens_per_s"]))
                window = new_window()
            else:
                bar.update(done)
            paused = time.perf_counter()  # evaluation and saving do not count against tokens/s
            if cfg.train.eval_every and done % cfg.train.eval_every == 0 and eval_rows and done != total_steps:
                metrics.write(done, **evaluate(model, eval_rows, cfg, pad_id, accelerator))
            if cfg.checkpoint.save_every and done % cfg.checkpoint.save_every == 0 and done != total_steps:
                if accelerator.is_main_process:
                    save_checkpoint(run_dir, done, accelerator.unwrap_model(model), optimizer, scheduler,
                                    keep_last=cfg.checkpoint.keep_last)
                accelerator.wait_for_everyone()
            window["t0"] += time.perf_counter() - paused

    # ---------------------------------------------------------------- save
    if eval_rows:
        result = evaluate(model, eval_rows, cfg, pad_id, accelerator)
        metrics.write(total_steps, **result)
        say(accelerator, f"eval loss {result['eval_loss']:.4f}, perplexity {result['eval_ppl']:.2f}")
    if accelerator.is_main_process:
        if cfg.checkpoint.save_every:  # the final state is resumable too (e.g. to train further)
            save_checkpoint(run_dir, total_steps, accelerator.unwrap_model(model), optimizer, scheduler,
                            keep_last=cfg.checkpoint.keep_last)
        save_final_model(accelerator.unwrap_model(model), tokenizer, model_dir, cfg.model.path)
        say(accelerator, f"[green]saved {model_dir}; curves in {plot_metrics(metrics.path, title='SFT')}")
    accelerator.wait_for_everyone()
    metrics.close()
    return model_dir


def new_window() -> dict[str, float]:
    """Running sums between two metrics rows."""
    return {"nll": 0.0, "tokens": 0.0, "seen": 0.0, "samples": 0.0, "t0": time.perf_counter()}


def resolve_packing(cfg: SFTConfig, model: torch.nn.Module, vocab_size: int) -> bool:
    """Pack when asked or when auto and a numerical check shows packed samples are masked apart."""
    if cfg.data.packing == "off":
        return False
    if cfg.peft.method == "prefix":
        if cfg.data.packing == "on":
            raise ConfigError("data.packing=on cannot be used with prefix tuning (the prefix is one per row)")
        return False
    exact = packing_is_exact(model, vocab_size)
    if cfg.data.packing == "on" and not exact:
        raise ConfigError(f"data.packing=on, but {type(model).__name__} lets packed samples attend to each other "
                          f"with attn_implementation={cfg.model.attn_implementation}; use packing=off or auto")
    return exact


@torch.no_grad()
def evaluate(model, rows, cfg: SFTConfig, pad_id: int, accelerator) -> dict[str, float]:
    """Token-weighted held-out NLL and its perplexity, over all processes."""
    model.eval()
    mine = shard(list(range(len(rows))), accelerator.process_index, accelerator.num_processes)
    nll = tokens = 0.0
    for i in range(0, len(mine), cfg.train.eval_batch_size):
        batch = collate([rows[j] for j in mine[i:i + cfg.train.eval_batch_size]], pad_id)
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        labels = batch.pop("labels")
        with accelerator.autocast():
            logits = model(**batch, use_cache=False).logits
        s, n = sequence_nll(logits, labels)
        nll += float(s.sum())
        tokens += float(n.sum())
    nll, tokens = reduce_sum(accelerator, nll, tokens)
    model.train()
    loss = nll / max(tokens, 1.0)
    return {"eval_loss": loss, "eval_ppl": math.exp(min(loss, 50.0))}
