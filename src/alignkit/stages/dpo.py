"""Offline preference optimisation: DPO and its kin, from the reward model's preference data.

setup   accelerator, run dir, tokenizer, preference data (rankings -> pairs exactly as for the reward
        model, split by ranking), the policy (an adapter is merged first) + PEFT, dropout off, and the
        reference log-probs of every pair, computed once from the starting weights
loop    one optimizer step per global batch of pairs: chosen and rejected responses in one forward
        pass (packed into shared rows when exact), the named loss (losses/dpo.py) plus an optional NLL
        term on the chosen response, averaged over the global batch; held-out pairs at intervals
save    final evaluation, the model (or adapter) as a standard HF directory in output_dir/model
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from alignkit.config import DPOConfig
from alignkit.data.packing import resolve_packing
from alignkit.data.reward import RewardPair, build_reward_data
from alignkit.data.templates import choose_chat_template
from alignkit.errors import DataError
from alignkit.losses import pairwise_accuracy
from alignkit.losses.dpo import REFERENCE_FREE, implicit_rewards, preference_loss
from alignkit.models import apply_peft, count_parameters, load_tokenizer
from alignkit.models.loading import is_adapter_dir, load_policy, load_reference
from alignkit.models.value import disable_dropout
from alignkit.training import engine
from alignkit.training.batching import global_batch
from alignkit.training.loop import close_run, save_model, start_training, train_steps
from alignkit.training.run import begin_stage, publish_data_report, reduce_sum, say
from alignkit.training.sequences import logprob_table, two_list_logprobs

# Per-pair quantities summed into each metrics row (divided by the pair count when written).
STATS = ("loss", "pref_loss", "nll", "accuracy", "reward_chosen", "reward_rejected", "margin", "kl_proxy",
         "logp_chosen", "logp_rejected")


def run_dpo(cfg: DPOConfig) -> Path:
    """Train a policy on preference pairs; return the saved model directory."""
    if cfg.loss == "kto":  # unpaired feedback: a loop of its own over single responses
        from alignkit.stages.kto import run_kto

        return run_kto(cfg)
    # ---------------------------------------------------------------- setup
    accelerator, run_dir, model_dir = begin_stage(cfg, "dpo")
    if model_dir is None:
        return run_dir / "model"

    tokenizer = load_tokenizer(cfg.model.path, cfg.model.trust_remote_code)
    choose_chat_template(tokenizer, cfg.data.chat_template)
    d = cfg.data
    train, held, report = build_reward_data(d.train_path, d.eval_path, d.eval_fraction, tokenizer, d.max_length,
                                            cfg.seed, d.adjacent_only, rating_margin=False, aspect=d.rating_aspect)
    publish_data_report(accelerator, report, run_dir)
    if not train:
        raise DataError(f"{d.train_path}: no preference pairs left after filtering (see data_report.json)")

    if is_adapter_dir(cfg.model.path):  # start from base + adapter folded together
        say(accelerator, f"{cfg.model.path} is an adapter; merging it into its base before training")
    model = load_policy(cfg.model).to(accelerator.device)
    with engine.gathered_parameters(accelerator, model):  # a forward pass: whole weights under ZeRO-3
        rows = d.max_length if resolve_packing(cfg, model, len(tokenizer)) else 0
    model = apply_peft(model, cfg.peft)
    # Dropout (LoRA's included) would make the policy differ from the reference at step 0 (the first
    # loss would not be ln 2) and adds noise to a loss that compares two log-probabilities.
    disable_dropout(model)
    global_size = cfg.train.batch_size * cfg.train.grad_accum * accelerator.num_processes
    total_steps = cfg.train.max_steps or max(1, math.ceil(cfg.train.epochs * len(train) / global_size))
    pad_id, device = tokenizer.pad_token_id, accelerator.device
    ref_train = ref_held = None
    if cfg.loss not in REFERENCE_FREE:
        # The reference log-probs of the pairs the run will train on (a short run on a large set does not
        # pay for all of it), once, before any update: the starting weights are the reference (or
        # reference_path's), so no second model stays in memory during training. With PEFT the
        # adapters are switched off: LoRA starts at zero anyway, but a prefix starts random.
        used = sorted({i for step in range(total_steps) for i in global_batch(len(train), step, global_size, cfg.seed)})
        # DeepSpeed trains the policy in its dtype: the reference's log-probs come in the same one.
        reference = engine.load_frozen(accelerator, lambda: load_reference(cfg.model, cfg.reference_path, tokenizer)) if cfg.reference_path \
            else engine.like_engine(accelerator, model)
        adapters_off = model.disable_adapter() if not cfg.reference_path and hasattr(model, "disable_adapter") \
            else nullcontext()
        # Under ZeRO-3 the weights arrive partitioned: whole on every process for this pass.
        with adapters_off, engine.gathered_parameters(accelerator, reference):
            ref_train = reference_logprobs(reference, train, cfg.train.eval_batch_size, pad_id, accelerator, rows, used)
            ref_held = reference_logprobs(reference, held, cfg.train.eval_batch_size, pad_id, accelerator, rows)
        del reference
    trainable, total = count_parameters(model)
    say(accelerator, f"policy {total:,} parameters, {trainable:,} trainable ({cfg.peft.method}); loss {cfg.loss}, "
                     f"beta {cfg.beta}; {len(train)} training pairs, {len(held)} held-out pairs; "
                     f"packing {'on' if rows else 'off'}")
    run = start_training(cfg, accelerator, model, run_dir, len(train), "pairs")
    model = run.model

    # ---------------------------------------------------------------- loop
    def loss(mb: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        ref = None if ref_train is None else ref_train[mb].to(device)
        losses, stats = pair_losses(cfg, model, [train[i] for i in mb], ref, pad_id, device, rows)
        return losses.sum(), {**{k: float(v.sum()) for k, v in stats.items()}, "pairs": float(len(mb))}

    def summarize(sums: dict[str, float], seconds: float, done: int) -> dict[str, float]:
        pairs = sums["pairs"]
        return {**{k: sums[k] / pairs for k in STATS if k in sums}, "pairs_per_s": pairs / seconds,
                "pairs": int(pairs), "epoch": done * global_size / len(train)}

    evaluate = (lambda: evaluate_pairs(cfg, model, held, ref_held, pad_id, accelerator, rows)) if held else None
    result = train_steps(cfg, run, name="dpo", batches=lambda indices, mine: (mine, global_size), loss=loss,
                         summarize=summarize, evaluate=evaluate, show=("loss", "accuracy", "pairs_per_s"))

    # ---------------------------------------------------------------- save
    if result:
        say(accelerator, f"held-out preference accuracy {result['eval_accuracy']:.3f}, "
                         f"margin {result['eval_margin']:.3f}, loss {result['eval_loss']:.4f}")
    save_model(accelerator, model, tokenizer, model_dir, cfg.model.path)
    return close_run(run, model_dir, "dpo")


def forward_pairs(model: Any, pairs: list[RewardPair], pad_id: int, device: Any, pack_rows: int
                  ) -> tuple[torch.Tensor, ...]:
    """Summed log-probs and token counts of the chosen and rejected responses: (logp_c, logp_r, n_c,
    n_r), each (P,), from one forward pass over all 2P sequences."""
    return two_list_logprobs(model, [(p.chosen_ids, p.chosen_start) for p in pairs],
                             [(p.rejected_ids, p.rejected_start) for p in pairs], pad_id, device, pack_rows)


def pair_losses(cfg: DPOConfig, model: Any, pairs: list[RewardPair], ref: torch.Tensor | None, pad_id: int,
                device: Any, pack_rows: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(loss (P,), per-pair statistics) for one micro-batch. ref: (P, 2) reference log-probs of the
    chosen and rejected responses, or None for the reference-free losses."""
    logp_c, logp_r, n_c, n_r = forward_pairs(model, pairs, pad_id, device, pack_rows)
    ref_c, ref_r = (None, None) if ref is None else (ref[:, 0], ref[:, 1])
    pref = preference_loss(cfg.loss, logp_c, logp_r, n_c, n_r, ref_c, ref_r, beta=cfg.beta,
                           label_smoothing=cfg.label_smoothing, simpo_gamma=cfg.simpo_gamma)
    nll = -logp_c / n_c.clamp(min=1)
    nll_weight = 1.0 if cfg.loss == "orpo" else cfg.nll_coef  # ORPO's loss is NLL + lambda x odds ratio (eq. 6)
    loss = pref + nll_weight * nll if nll_weight else pref
    with torch.no_grad():
        if ref is None:  # reference-free: SimPO's implicit reward is beta x the average log-prob
            r_c, r_r = cfg.beta * logp_c / n_c.clamp(min=1), cfg.beta * logp_r / n_r.clamp(min=1)
        else:
            r_c, r_r = implicit_rewards(logp_c, ref_c, cfg.beta), implicit_rewards(logp_r, ref_r, cfg.beta)
        stats = {"loss": loss, "pref_loss": pref, "nll": nll, "accuracy": pairwise_accuracy(r_c, r_r),
                 "reward_chosen": r_c, "reward_rejected": r_r, "margin": r_c - r_r,
                 "logp_chosen": logp_c / n_c.clamp(min=1), "logp_rejected": logp_r / n_r.clamp(min=1)}
        if ref is not None:
            # KL proxy: mean per-token log pi_ref - log pi over both responses (the k1 estimate of
            # KL(ref || pi) if the data came from the reference); 0 at the start.
            stats["kl_proxy"] = 0.5 * ((ref_c - logp_c) / n_c.clamp(min=1) + (ref_r - logp_r) / n_r.clamp(min=1))
    return loss, {k: v.detach() for k, v in stats.items()}


def reference_logprobs(model: Any, pairs: list[RewardPair], batch_size: int, pad_id: int, accelerator: Any,
                       pack_rows: int, indices: list[int] | None = None) -> torch.Tensor:
    """(N, 2) summed log-probs of the chosen and rejected response of every pair (or of the pairs at
    `indices`; the other rows stay 0) under `model`, sharded over processes."""
    def forward(idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return forward_pairs(model, [pairs[j] for j in idx], pad_id, accelerator.device, pack_rows)[:2]
    return logprob_table(model, forward, len(pairs), batch_size, accelerator, indices)


@torch.no_grad()
def evaluate_pairs(cfg: DPOConfig, model: Any, pairs: list[RewardPair], ref: torch.Tensor | None, pad_id: int,
                   accelerator: Any, pack_rows: int) -> dict[str, float]:
    """Held-out loss, preference accuracy (implicit reward of chosen > rejected) and margin, overall
    and per source, over all processes."""
    model.eval()
    sources = sorted({p.source for p in pairs})
    loss = margin = 0.0
    acc = {s: 0.0 for s in sources}
    n = {s: 0.0 for s in sources}
    for idx, real in engine.lockstep(list(range(len(pairs))), accelerator.process_index, accelerator.num_processes,
                                     cfg.train.eval_batch_size):
        chunk = [pairs[j] for j in idx]
        with accelerator.autocast():
            _, stats = pair_losses(cfg, model, chunk, None if ref is None else ref[idx].to(accelerator.device),
                                   pad_id, accelerator.device, pack_rows)
        if not real:
            continue
        loss += float(stats["loss"].sum())
        margin += float(stats["margin"].sum())
        for p, a in zip(chunk, stats["accuracy"].tolist()):
            acc[p.source] += a
            n[p.source] += 1
    totals = reduce_sum(accelerator, loss, margin, *[acc[s] for s in sources], *[n[s] for s in sources])
    loss, margin, accs, counts = totals[0], totals[1], totals[2:2 + len(sources)], totals[2 + len(sources):]
    model.train()
    total = max(sum(counts), 1.0)
    out = {"eval_loss": loss / total, "eval_accuracy": sum(accs) / total, "eval_margin": margin / total}
    if len(sources) > 1:
        out.update({f"eval_accuracy/{s}": a / c for s, a, c in zip(sources, accs, counts) if c})
    return out
