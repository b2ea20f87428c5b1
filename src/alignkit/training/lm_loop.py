"""The causal-LM training loop that SFT and pretraining share (they differ only in their data and
labels: response tokens for SFT, every token for pretraining).

One optimizer step per global batch: the micro-batches' summed NLL is normalised by the labelled
tokens of the whole global batch (docs/implementation_details.md, item 7), gradients are clipped,
and metrics, evaluation and checkpoints happen at their intervals.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from alignkit.data import collate
from alignkit.errors import AlignkitError
from alignkit.losses import sequence_nll
from alignkit.training.batching import global_batch, micro_batches
from alignkit.training import engine
from alignkit.training.checkpoint import latest_checkpoint, save_final_model
from alignkit.training.metrics import MetricsWriter, truncate_metrics
from alignkit.training.optim import build_optimizer, build_scheduler
from alignkit.training.plots import plot_metrics
from alignkit.training.progress import ProgressBar
from alignkit.training.run import reduce_sum, say


class TrainingDiverged(AlignkitError):
    """The loss became NaN or infinite: nothing is saved from a diverged run."""


def train_and_save(cfg: Any, *, name: str, accelerator: Any, model: Any, tokenizer: Any, train_rows: list,
                   eval_rows: list, run_dir: Path, base_model_path: str | None = None) -> Path:
    """Optimizer and schedule, resume, the loop, final evaluation, and the model saved (with its
    training curves) to run_dir/model: everything after a causal-LM stage's own setup."""
    global_size = cfg.train.batch_size * cfg.train.grad_accum * accelerator.num_processes
    total_steps = cfg.train.max_steps or max(1, math.ceil(cfg.train.epochs * len(train_rows) / global_size))
    if len(train_rows) < global_size:
        say(accelerator, f"[yellow]note: {len(train_rows)} training rows but a global batch of {global_size}: "
                         "every step sees some rows more than once")
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, total_steps)
    model, optimizer = engine.prepare(accelerator, model, optimizer, batch_size=cfg.train.batch_size,
                                      grad_accum=cfg.train.grad_accum, max_grad_norm=cfg.optim.max_grad_norm)
    metrics = MetricsWriter(run_dir, accelerator.is_main_process, cfg.log.tensorboard)
    start = resume_step(cfg, run_dir, accelerator, model, optimizer, scheduler, metrics)

    parts = dict(accelerator=accelerator, model=model, optimizer=optimizer, scheduler=scheduler,
                 eval_rows=eval_rows, pad_id=tokenizer.pad_token_id, run_dir=run_dir, metrics=metrics)
    train_loop(cfg, name=name, train_rows=train_rows, start=start, total_steps=total_steps, **parts)
    finish(cfg, total_steps=total_steps, **parts)

    model_dir = run_dir / "model"
    save_model(accelerator, model, tokenizer, model_dir, base_model_path)
    if accelerator.is_main_process:
        say(accelerator, f"[green]saved {model_dir}; curves in {plot_metrics(metrics.path, title=name)}")
    metrics.close()
    return model_dir


def save_model(accelerator: Any, model: Any, tokenizer: Any, out: Path, base_model_path: str | None) -> None:
    """The trained model as a standard HF directory, written by the main process with the weights
    whole (gathered under ZeRO-3). A collective: every process calls it."""
    # FSDP and ZeRO-3 hold shards: accelerate consolidates them into one state dict on the main
    # process, layer by layer (a collective: every process calls it).
    state = accelerator.get_state_dict(model) if engine.partitioned(accelerator) else None
    if accelerator.is_main_process:
        save_final_model(accelerator.unwrap_model(model), tokenizer, out, base_model_path, state_dict=state)
    accelerator.wait_for_everyone()


def resume_step(cfg: Any, run_dir: Path, accelerator: Any, model: Any, optimizer: Any, scheduler: Any,
                metrics: MetricsWriter) -> int:
    """The step to start from: the newest checkpoint's when resuming (state restored), else 0."""
    ckpt = latest_checkpoint(run_dir) if cfg.resume else None
    if ckpt is None:
        if cfg.resume and metrics.path.exists():
            say(accelerator, f"no complete checkpoint in {run_dir / 'checkpoints'}; starting from step 0")
            if accelerator.is_main_process:
                truncate_metrics(metrics.path, 0)  # rows of the lost attempt would garble the curves
        return 0
    global_size = cfg.train.batch_size * cfg.train.grad_accum * accelerator.num_processes
    start = engine.load_resumable(ckpt, accelerator, model, optimizer, scheduler, global_size)["step"]
    if accelerator.is_main_process:
        truncate_metrics(metrics.path, start)
    say(accelerator, f"resumed from {ckpt} at step {start}")
    return start


def train_loop(cfg: Any, *, name: str, accelerator: Any, model: Any, optimizer: Any, scheduler: Any,
               train_rows: list, eval_rows: list, pad_id: int, run_dir: Path, metrics: MetricsWriter,
               start: int, total_steps: int) -> None:
    """Run optimizer steps start..total_steps-1. `cfg` has train, optim, log, checkpoint and seed."""
    world = accelerator.num_processes
    global_size = cfg.train.batch_size * cfg.train.grad_accum * world
    if start == 0 and cfg.train.eval_every and eval_rows:
        metrics.write(0, **evaluate(model, eval_rows, cfg.train.eval_batch_size, pad_id, accelerator))
    window = new_window()
    with ProgressBar(total_steps, start, name, cfg.log.progress and accelerator.is_main_process) as bar:
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
                with engine.micro_batch(accelerator, model, last=k == len(batches) - 1):
                    batch = {key: v.to(accelerator.device) for key, v in batch.items()}
                    labels = batch.pop("labels")
                    logits = model(**batch, use_cache=False).logits  # a cache would disable packed masking
                    nll_sum, _ = sequence_nll(logits, labels)
                    engine.backward(accelerator, nll_sum.sum() * world / max(global_tokens, 1.0))
                step_nll += float(nll_sum.detach().sum())
            grad_norm, lr = optimizer_step(cfg, name, step, step_nll, accelerator, model, optimizer, scheduler,
                                           hint="lower optim.lr, or use float32 weights (model.dtype) with "
                                                "train.precision=bf16")

            done = step + 1
            window["nll"] += step_nll
            window["tokens"] += local_tokens
            window["seen"] += sum(len(train_rows[i]) for mb in mine for i in mb)  # useful (non-pad) tokens
            window["samples"] += sum(getattr(train_rows[i], "num_samples", 1) for mb in mine for i in mb)
            if done % cfg.log.every == 0 or done == total_steps:
                nll, tokens, seen, samples = reduce_sum(accelerator, window["nll"], window["tokens"], window["seen"],
                                                        window["samples"])
                # tokens / samples: what the steps since the last row trained on, all processes.
                row = {"loss": nll / max(tokens, 1.0), "lr": lr,
                       "tokens_per_s": seen / (time.perf_counter() - window["t0"]), "tokens": int(seen),
                       "samples": int(samples), "epoch": done * global_size / len(train_rows)}
                if grad_norm is not None:
                    row["grad_norm"] = grad_norm
                metrics.write(done, **row)
                bar.update(done, loss=row["loss"], lr=row["lr"], tok_s=round(row["tokens_per_s"]))
                window = new_window()
            else:
                bar.update(done)
            paused = time.perf_counter()  # evaluation and saving do not count against tokens/s
            if cfg.train.eval_every and done % cfg.train.eval_every == 0 and eval_rows and done != total_steps:
                metrics.write(done, **evaluate(model, eval_rows, cfg.train.eval_batch_size, pad_id, accelerator))
            if cfg.checkpoint.save_every and done % cfg.checkpoint.save_every == 0 and done != total_steps:
                save_resumable(cfg, run_dir, done, accelerator, model, optimizer, scheduler)
            window["t0"] += time.perf_counter() - paused


def finish(cfg: Any, *, accelerator: Any, model: Any, optimizer: Any, scheduler: Any, eval_rows: list,
           pad_id: int, run_dir: Path, metrics: MetricsWriter, total_steps: int) -> dict[str, float]:
    """Final evaluation (logged at the last step) and, when checkpointing, a resumable final state."""
    result: dict[str, float] = {}
    if eval_rows:
        result = evaluate(model, eval_rows, cfg.train.eval_batch_size, pad_id, accelerator)
        metrics.write(total_steps, **result)
        say(accelerator, f"eval loss {result['eval_loss']:.4f}, perplexity {result['eval_ppl']:.2f}")
    if cfg.checkpoint.save_every:  # so a crash while the model is being saved resumes without retraining
        save_resumable(cfg, run_dir, total_steps, accelerator, model, optimizer, scheduler)
    return result


def optimizer_step(cfg: Any, name: str, step: int, loss: float, accelerator: Any, model: Any, optimizer: Any,
                   scheduler: Any, hint: str = "lower optim.lr") -> tuple[float | None, float]:
    """The end of every stage's optimizer step, after the backward passes: stop if the loss diverged
    (decided by all processes together, or one would raise while the others wait in a collective),
    clip the gradient norm, step the optimizer and the schedule. Returns (grad_norm or None, the
    learning rate this step used)."""
    if reduce_sum(accelerator, float(not math.isfinite(loss)))[0]:
        raise TrainingDiverged(f"{name}: the loss is {loss} at step {step + 1}; {hint}")
    grad_norm = None
    if cfg.optim.max_grad_norm > 0:
        norm = accelerator.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
        grad_norm = None if norm is None else float(norm)  # DeepSpeed without ZeRO may not report it
    lr = scheduler.get_last_lr()[0]  # the rate this step uses (step() moves it to the next one)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm, lr


def save_resumable(cfg: Any, run_dir: Path, step: int, accelerator: Any, model: Any, optimizer: Any,
                   scheduler: Any) -> None:
    """A resumable checkpoint of a loop whose global batch is batch_size x grad_accum x processes."""
    global_size = cfg.train.batch_size * cfg.train.grad_accum * accelerator.num_processes
    engine.save_resumable(run_dir, step, accelerator, model, optimizer, scheduler, keep_last=cfg.checkpoint.keep_last,
                          global_batch=global_size)


def new_window() -> dict[str, float]:
    """Running sums between two metrics rows."""
    return {"nll": 0.0, "tokens": 0.0, "seen": 0.0, "samples": 0.0, "t0": time.perf_counter()}


@torch.no_grad()
def evaluate(model: Any, rows: list, batch_size: int, pad_id: int, accelerator: Any) -> dict[str, float]:
    """Token-weighted held-out NLL and its perplexity, over all processes."""
    model.eval()
    nll = tokens = 0.0
    for part, real in engine.lockstep(rows, accelerator.process_index, accelerator.num_processes, batch_size):
        batch = collate(part, pad_id)
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        labels = batch.pop("labels")
        with accelerator.autocast():
            logits = model(**batch, use_cache=False).logits
        s, n = sequence_nll(logits, labels)
        nll += float(s.sum()) * real
        tokens += float(n.sum()) * real
    nll, tokens = reduce_sum(accelerator, nll, tokens)
    model.train()
    loss = nll / max(tokens, 1.0)
    return {"eval_loss": loss, "eval_ppl": math.exp(min(loss, 50.0))}
