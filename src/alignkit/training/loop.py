"""The step loop every gradient-trained stage shares (pretraining, SFT, reward model, DPO and its kin,
token-level distillation): a stage sets itself up, then hands this loop two small functions, one
that turns a step's indices into micro-batches and one that gives a micro-batch's loss.

setup   start_training: the step count, optimizer and schedule, the engine, the metrics file, and
        the step to start from (a resumed run's checkpoint restores weights, optimizer, schedule)
loop    train_steps: per optimizer step, the global batch's indices (the same on every process,
        docs/implementation_details.md item 5), this process's micro-batches, forward and backward
        of each with the loss normalised over the whole global batch, the divergence check, gradient
        clipping and the optimizer step; a metrics row, an evaluation and a resumable checkpoint at
        their intervals; the final evaluation and (when checkpointing) a final resumable state
save    save_model and close_run: the model as a standard HF directory, the curves plotted
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from alignkit.errors import AlignkitError, TrainingDiverged
from alignkit.training import engine
from alignkit.training.batching import global_batch, micro_batches
from alignkit.models.memory import enable_gradient_checkpointing
from alignkit.models.saving import save_final_model
from alignkit.training.checkpoint import list_checkpoints
from alignkit.training.metrics import MetricsWriter, truncate_metrics
from alignkit.training.optim import build_optimizer, build_scheduler
from alignkit.training.plots import plot_metrics
from alignkit.training.progress import ProgressBar
from alignkit.training.run import reduce_sum, say

# batches(global indices, this process's micro-batches of them) -> (one payload per micro-batch, the
# global count the summed loss is divided by: labelled tokens, pairs, responses)
Batches = Callable[[list[int], list[list[int]]], tuple[Sequence[Any], float]]
# loss(payload) -> (the micro-batch's summed loss, to backpropagate; its sums for the metrics window)
Loss = Callable[[Any], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class Run:
    """A stage's training state once set up (made by start_training)."""

    accelerator: Any
    model: Any
    """The model as the engine wraps it."""
    optimizer: Any
    scheduler: Any
    metrics: MetricsWriter
    run_dir: Path
    units: int
    """How many rows (pairs, rankings, prompts) the global batches are drawn from."""
    global_size: int
    """Units per optimizer step over all processes: batch_size x grad_accum x processes."""
    total_steps: int
    start: int
    """The first step to run: a resumed checkpoint's step, else 0."""
    extra: dict = field(default_factory=dict)
    """The stage's own state as the resumed checkpoint saved it ({} when starting afresh)."""
    state: Callable[[], dict] | None = None
    """The stage's own state to save with every checkpoint (GRPO's Lagrange multiplier); None: nothing."""


def start_training(cfg: Any, accelerator: Any, model: Any, run_dir: Path, units: int, unit_name: str = "rows",
                   total_steps: int = 0, global_size: int = 0, micro_size: int = 0) -> Run:
    """Step count, optimizer and schedule, the model in the engine, the metrics file, and resume.
    `cfg` has train, optim, log, checkpoint, seed and resume. A stage whose steps are not global
    batches of `units` (GRPO: several steps per generation) gives its own total_steps, global_size
    (what a checkpoint's layout must match) and micro_size (samples per micro-batch)."""
    if not global_size:
        global_size = cfg.train.batch_size * cfg.train.grad_accum * accelerator.num_processes
        if units < global_size:
            say(accelerator, f"[yellow]note: {units} training {unit_name} but a global batch of {global_size}: "
                             f"every step sees some {unit_name} more than once")
    total_steps = total_steps or cfg.train.max_steps or max(1, math.ceil(cfg.train.epochs * units / global_size))
    if cfg.train.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, total_steps)
    model, optimizer = engine.prepare(accelerator, model, optimizer, batch_size=micro_size or cfg.train.batch_size,
                                      grad_accum=cfg.train.grad_accum, max_grad_norm=cfg.optim.max_grad_norm)
    metrics = MetricsWriter(run_dir, accelerator.is_main_process, cfg.log.tensorboard, cfg.log.report_to, cfg,
                            cfg.log.project)
    start, extra = resume_step(cfg, run_dir, accelerator, model, optimizer, scheduler, metrics, global_size)
    return Run(accelerator, model, optimizer, scheduler, metrics, run_dir, units, global_size, total_steps, start, extra)


def train_steps(cfg: Any, run: Run, *, name: str, batches: Batches, loss: Loss,
                summarize: Callable[[dict[str, float], float, int], dict[str, float]],
                evaluate: Callable[[], dict[str, float]] | None = None,
                on_eval: Callable[[int, dict[str, float]], None] | None = None,
                show: Sequence[str] = ("loss",), hint: str = "lower optim.lr") -> dict[str, float]:
    """Run steps run.start .. run.total_steps - 1, then the final evaluation; return its figures ({}
    without `evaluate`).

    summarize(window sums over all processes, seconds of training they took, step) -> the metrics
    row (the loop adds lr and grad_norm); `show` names the row's figures on the progress bar;
    on_eval(step, figures) sees every evaluation (early stopping keeps the best)."""
    acc, model = run.accelerator, run.model
    world = acc.num_processes

    def evaluate_at(step: int) -> dict[str, float]:
        figures = evaluate()
        run.metrics.write(step, **figures)
        if on_eval is not None:
            on_eval(step, figures)
        return figures

    if run.start == 0 and cfg.train.eval_every and evaluate is not None:
        evaluate_at(0)
    window: dict[str, float] = {}
    t0 = time.perf_counter()
    with ProgressBar(run.total_steps, run.start, name, cfg.log.progress and acc.is_main_process) as bar:
        for step in range(run.start, run.total_steps):
            model.train()
            indices = global_batch(run.units, step, run.global_size, cfg.seed)
            mine = micro_batches(indices, cfg.train.batch_size, cfg.train.grad_accum, acc.process_index, world)
            payloads, denominator = batches(indices, mine)
            step_loss = 0.0
            for k, payload in enumerate(payloads):
                with engine.micro_batch(acc, model, last=k == len(payloads) - 1):
                    loss_sum, sums = loss(payload)
                    # Normalised over the whole global batch, so any split into micro-batches and
                    # processes gives the same gradient (engines average, hence x world).
                    engine.backward(acc, loss_sum * world / denominator)
                step_loss += float(loss_sum.detach())
                for key, value in sums.items():
                    window[key] = window.get(key, 0.0) + value
            grad_norm, lr = optimizer_step(cfg, name, step, step_loss, acc, model, run.optimizer, run.scheduler, hint)

            done = step + 1
            saving = cfg.checkpoint.save_every and done % cfg.checkpoint.save_every == 0 and done != run.total_steps
            # A checkpoint closes the metrics window too: a run resumed from it starts with an empty
            # one, so it writes the same rows as the run that never stopped.
            if done % cfg.log.every == 0 or done == run.total_steps or (saving and window):
                keys = sorted(window)
                totals = dict(zip(keys, reduce_sum(acc, *[window[k] for k in keys])))
                row = {**summarize(totals, time.perf_counter() - t0, done), "lr": lr}
                if grad_norm is not None:
                    row["grad_norm"] = grad_norm
                run.metrics.write(done, **row)
                bar.update(done, **{k: row[k] for k in show if k in row})
                window, t0 = {}, time.perf_counter()
            else:
                bar.update(done)
            paused = time.perf_counter()  # evaluation and saving do not count against the rates
            if cfg.train.eval_every and done % cfg.train.eval_every == 0 and evaluate is not None \
                    and done != run.total_steps:
                evaluate_at(done)
            if saving:
                save_resumable(cfg, run, done)
            t0 += time.perf_counter() - paused

    result = evaluate_at(run.total_steps) if evaluate is not None else {}
    if cfg.checkpoint.save_every:  # so a crash while the model is being saved resumes without retraining
        save_resumable(cfg, run, run.total_steps)
    return result


def optimizer_step(cfg: Any, name: str, step: int, loss: float, accelerator: Any, model: Any, optimizer: Any,
                   scheduler: Any, hint: str = "lower optim.lr") -> tuple[float | None, float]:
    """The end of every optimizer step, after the backward passes: stop if the loss diverged
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


def resume_step(cfg: Any, run_dir: Path, accelerator: Any, model: Any, optimizer: Any, scheduler: Any,
                metrics: MetricsWriter, global_size: int | None = None, unit: str = "step") -> tuple[int, dict[str, Any]]:
    """(the step to start from, the stage's extras saved with the checkpoint): the newest
    checkpoint's when resuming (weights, optimizer, schedule and random state restored), else (0, {}).
    global_size: the checkpoint's global batch must be this one (default batch_size x grad_accum x
    processes)."""
    if global_size is None:
        global_size = cfg.train.batch_size * cfg.train.grad_accum * accelerator.num_processes
    failures = []
    # Newest first; one that cannot be read (a truncated file, a damaged disk) gives way to the one
    # before it. Every process reads the same files, so all of them fall back alike.
    for ckpt in reversed(list_checkpoints(run_dir)) if cfg.resume else []:
        try:
            state = engine.load_resumable(ckpt, accelerator, model, optimizer, scheduler, global_size)
        except AlignkitError:
            raise  # readable, but not this run's (another batch layout, another peft setting)
        except Exception as exc:  # noqa: BLE001 - any reading failure means this checkpoint is unusable
            failures.append(f"{ckpt.name}: {type(exc).__name__}: {str(exc)[:200]}")
            say(accelerator, f"[yellow]warning: checkpoint {ckpt} cannot be read ({failures[-1]}); "
                             "trying the one before it")
            continue
        if accelerator.is_main_process:
            truncate_metrics(metrics.path, state["step"])
        say(accelerator, f"resumed from {ckpt} at {unit} {state['step']}")
        return state["step"], state.get("extra") or {}
    if failures:
        raise AlignkitError(f"no checkpoint in {run_dir / 'checkpoints'} can be read ({'; '.join(failures)}); "
                            "delete the directory to start over")
    if cfg.resume and metrics.path.exists():
        say(accelerator, f"no complete checkpoint in {run_dir / 'checkpoints'}; starting from {unit} 0")
        if accelerator.is_main_process:
            truncate_metrics(metrics.path, 0)  # rows of the lost attempt would garble the curves
    return 0, {}


def save_resumable(cfg: Any, run: Run, step: int) -> None:
    """A resumable checkpoint: weights, optimizer, schedule and random state at `step`."""
    engine.save_resumable(run.run_dir, step, run.accelerator, run.model, run.optimizer, run.scheduler,
                          keep_last=cfg.checkpoint.keep_last, global_batch=run.global_size,
                          extra=run.state() if run.state else None)


def save_model(accelerator: Any, model: Any, tokenizer: Any, out: Path, base_model_path: str | None) -> None:
    """The trained model as a standard HF directory, written by the main process with the weights
    whole (gathered under ZeRO-3). A collective: every process calls it."""
    # FSDP and ZeRO-3 hold shards: accelerate consolidates them into one state dict on the main
    # process, layer by layer (a collective: every process calls it).
    state = accelerator.get_state_dict(model) if engine.partitioned(accelerator) else None
    if accelerator.is_main_process:
        save_final_model(accelerator.unwrap_model(model), tokenizer, out, base_model_path, state_dict=state)
    accelerator.wait_for_everyone()


BEST_FILE = "best_eval_reward.json"


def save_policy(accelerator: Any, model: Any, policy: Any, tokenizer: Any, out: Path, model_path: str,
                record: dict[str, float] | None = None) -> None:
    """An RL policy as a standard HF directory: a LoRA policy saves its adapter over the SFT model, or
    the merged model when the SFT model was itself an adapter (an adapter's base must be a directory).
    `model` is the engine's (gathered whole under ZeRO-3), `policy` the module to save from it;
    `record` (the best policy's held-out reward and step) is written beside it. A collective."""
    import copy
    import json

    from alignkit.models.loading import is_adapter_dir

    with engine.gathered_parameters(accelerator, model):
        if accelerator.is_main_process:
            if hasattr(policy, "peft_config") and is_adapter_dir(model_path):
                policy = copy.deepcopy(policy).merge_and_unload()
            extra = {BEST_FILE: json.dumps(record) + "\n"} if record else None
            save_final_model(policy, tokenizer, out, model_path, extra_files=extra)
    accelerator.wait_for_everyone()


def saved_best(run_dir: Path) -> float:
    """The held-out reward of the best policy in run_dir/best (-inf if none): an interrupted run may
    have saved one after its last checkpoint."""
    import json

    saved = run_dir / "best" / BEST_FILE
    return float(json.loads(saved.read_text())["eval_reward"]) if saved.is_file() else -math.inf


def close_run(run: Run, model_dir: Path, title: str) -> Path:
    """After the save: say where the model is, plot the curves, close the metrics file."""
    if run.accelerator.is_main_process:
        say(run.accelerator, f"[green]saved {model_dir}; curves in {plot_metrics(run.metrics.path, title=title)}")
    run.accelerator.wait_for_everyone()
    run.metrics.close()
    return model_dir


def kept_policy(final: Path, keep_best: bool) -> Path:
    """The policy an RL run hands on: its best held-out iteration (`best/` beside the final model)
    with keep_best, else the final model."""
    best = Path(final).parent / "best"
    return best if keep_best and (best / "config.json").exists() else Path(final)
