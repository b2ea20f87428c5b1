"""KTO: `alignkit dpo loss=kto`, offline alignment from unpaired feedback (one response at a time,
labelled desirable or not; preference pairs give one of each).

setup   accelerator, run dir, tokenizer, unpaired examples (data/kto.py; prompts whole to train or
        eval), the policy + PEFT, dropout off, and the reference log-probs of every example and of
        its mismatched sequence, once, from the starting weights (as DPO's)
loop    one optimizer step per global batch: each example and its mismatched sequence in one forward
        pass; the reference point z0 from the micro-batch's mismatched pairs; the KTO loss
        (losses/kto.py) averaged over the global batch; held-out examples at intervals
save    final evaluation, the model (or adapter) in output_dir/model
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from alignkit.config import DPOConfig
from alignkit.data.kto import KTOExample, build_kto_data
from alignkit.data.packing import resolve_packing
from alignkit.data.templates import choose_chat_template
from alignkit.errors import DataError
from alignkit.losses.kto import kto_loss, kto_reference_point
from alignkit.models import apply_peft, count_parameters, load_tokenizer
from alignkit.models.loading import load_policy, load_reference
from alignkit.models.value import disable_dropout
from alignkit.training import engine
from alignkit.training.batching import global_batch
from alignkit.training.loop import close_run, save_model, start_training, train_steps
from alignkit.training.run import begin_stage, publish_data_report, reduce_sum, say
from alignkit.training.sequences import logprob_table, two_list_logprobs

STATS = ("loss", "z0", "reward_desirable", "reward_undesirable", "desirable", "undesirable")


def run_kto(cfg: DPOConfig) -> Path:
    """Train a policy on unpaired desirable / undesirable examples; return the saved model directory."""
    # ---------------------------------------------------------------- setup
    accelerator, run_dir, model_dir = begin_stage(cfg, "dpo")
    if model_dir is None:
        return run_dir / "model"
    tokenizer = load_tokenizer(cfg.model.path, cfg.model.trust_remote_code)
    choose_chat_template(tokenizer, cfg.data.chat_template)
    d = cfg.data
    train, held, report = build_kto_data(d.train_path, d.eval_path, d.eval_fraction, tokenizer, d.max_length,
                                         cfg.seed, d.rating_aspect)
    publish_data_report(accelerator, report, run_dir)
    if not train:
        raise DataError(f"{d.train_path}: no examples left after filtering (see data_report.json)")
    model = load_policy(cfg.model).to(accelerator.device)
    with engine.gathered_parameters(accelerator, model):
        rows = d.max_length if resolve_packing(cfg, model, len(tokenizer)) else 0
    model = apply_peft(model, cfg.peft)
    disable_dropout(model)  # the first loss is exactly lambda / 2 only without dropout
    global_size = cfg.train.batch_size * cfg.train.grad_accum * accelerator.num_processes
    total_steps = cfg.train.max_steps or max(1, math.ceil(cfg.train.epochs * len(train) / global_size))
    pad_id, device = tokenizer.pad_token_id, accelerator.device
    used = sorted({i for step in range(total_steps) for i in global_batch(len(train), step, global_size, cfg.seed)})
    reference = engine.load_frozen(accelerator, lambda: load_reference(cfg.model, cfg.reference_path, tokenizer)) if cfg.reference_path \
        else engine.like_engine(accelerator, model)
    adapters_off = model.disable_adapter() if not cfg.reference_path and hasattr(model, "disable_adapter") \
        else nullcontext()
    with adapters_off, engine.gathered_parameters(accelerator, reference):
        ref_train = reference_table(reference, train, cfg.train.eval_batch_size, pad_id, accelerator, rows, used)
        ref_held = reference_table(reference, held, cfg.train.eval_batch_size, pad_id, accelerator, rows)
    del reference
    trainable, total = count_parameters(model)
    good = sum(e.desirable for e in train)
    say(accelerator, f"policy {total:,} parameters, {trainable:,} trainable ({cfg.peft.method}); loss kto, beta "
                     f"{cfg.beta}; {len(train)} training examples ({good} desirable), {len(held)} held out")
    run = start_training(cfg, accelerator, model, run_dir, len(train), "examples")
    model = run.model

    # ---------------------------------------------------------------- loop
    def loss(mb: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        losses, stats = example_losses(cfg, model, [train[i] for i in mb], ref_train[mb].to(device), pad_id,
                                       device, rows)
        return losses.sum(), {**{k: float(v) for k, v in stats.items()}, "examples": float(len(mb))}

    def summarize(sums: dict[str, float], seconds: float, done: int) -> dict[str, float]:
        n = sums["examples"]
        return {"loss": sums["loss"] / n, "z0": sums["z0"] / sums["micro_batches"],
                "reward_desirable": sums["reward_desirable"] / max(sums["desirable"], 1.0),
                "reward_undesirable": sums["reward_undesirable"] / max(sums["undesirable"], 1.0),
                "examples_per_s": n / seconds, "examples": int(n), "epoch": done * global_size / len(train)}

    evaluate = (lambda: evaluate_examples(cfg, model, held, ref_held, pad_id, accelerator, rows)) if held else None
    result = train_steps(cfg, run, name="kto", batches=lambda indices, mine: (mine, global_size), loss=loss,
                         summarize=summarize, evaluate=evaluate, show=("loss", "z0", "examples_per_s"))

    # ---------------------------------------------------------------- save
    if result:
        say(accelerator, f"held-out reward desirable {result['eval_reward_desirable']:+.3f}, undesirable "
                         f"{result['eval_reward_undesirable']:+.3f}, loss {result['eval_loss']:.4f}")
    save_model(accelerator, model, tokenizer, model_dir, cfg.model.path)
    return close_run(run, model_dir, "kto")


def forward_examples(model: Any, examples: list[KTOExample], pad_id: int, device: Any, pack_rows: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of each example's completion and of its mismatched completion, (B,) each, from
    one forward pass over the 2B sequences."""
    return two_list_logprobs(model, [(e.ids, e.start) for e in examples], [(e.kl_ids, e.kl_start) for e in examples],
                             pad_id, device, pack_rows)[:2]


def example_losses(cfg: DPOConfig, model: Any, examples: list[KTOExample], ref: torch.Tensor, pad_id: int,
                   device: Any, pack_rows: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(loss (B,), summed statistics) of one micro-batch; ref (B, 2): the reference's log-probs of
    each completion and of its mismatched one."""
    logp, logp_kl = forward_examples(model, examples, pad_id, device, pack_rows)
    z0 = kto_reference_point(logp_kl.detach(), ref[:, 1])
    desirable = torch.tensor([e.desirable for e in examples], device=logp.device)
    losses = kto_loss(logp, ref[:, 0], desirable, z0, cfg.beta, cfg.desirable_weight, cfg.undesirable_weight)
    with torch.no_grad():
        reward = cfg.beta * (logp - ref[:, 0])  # the implicit reward, as DPO's
        stats = {"loss": losses.sum(), "z0": z0, "micro_batches": torch.tensor(1.0),
                 "reward_desirable": (reward * desirable).sum(), "reward_undesirable": (reward * ~desirable).sum(),
                 "desirable": desirable.sum().float(), "undesirable": (~desirable).sum().float()}
    return losses, {k: v.detach() for k, v in stats.items()}


def reference_table(model: Any, examples: list[KTOExample], batch_size: int, pad_id: int, accelerator: Any,
                    pack_rows: int, indices: list[int] | None = None) -> torch.Tensor:
    """(N, 2) reference log-probs of each completion and of its mismatched one (rows outside
    `indices` stay 0), sharded over processes."""
    def forward(idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return forward_examples(model, [examples[j] for j in idx], pad_id, accelerator.device, pack_rows)
    return logprob_table(model, forward, len(examples), batch_size, accelerator, indices)


@torch.no_grad()
def evaluate_examples(cfg: DPOConfig, model: Any, examples: list[KTOExample], ref: torch.Tensor, pad_id: int,
                      accelerator: Any, pack_rows: int) -> dict[str, float]:
    """Held-out loss and mean implicit reward of desirable and undesirable completions, all processes."""
    model.eval()
    sums = dict.fromkeys(("loss", "reward_desirable", "reward_undesirable", "desirable", "undesirable"), 0.0)
    for idx, real in engine.lockstep(list(range(len(examples))), accelerator.process_index,
                                     accelerator.num_processes, cfg.train.eval_batch_size):
        with accelerator.autocast():
            _, stats = example_losses(cfg, model, [examples[j] for j in idx], ref[idx].to(accelerator.device),
                                      pad_id, accelerator.device, pack_rows)
        if real:
            for k in sums:
                sums[k] += float(stats[k])
    loss, good, bad, n_good, n_bad = reduce_sum(accelerator, *sums.values())
    model.train()
    return {"eval_loss": loss / max(n_good + n_bad, 1.0), "eval_reward_desirable": good / max(n_good, 1.0),
            "eval_reward_undesirable": bad / max(n_bad, 1.0), "eval_reward_gap": good / max(n_good, 1.0)
            - bad / max(n_bad, 1.0)}
