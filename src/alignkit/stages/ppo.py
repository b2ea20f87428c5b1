"""RLHF with PPO: the SFT model samples, the reward model scores, PPO updates the policy, and a
per-token KL penalty keeps it near the SFT (reference) model (Ziegler et al. 2019; Stiennon et al.
2020; Ouyang et al. 2022).

setup   accelerator, run dir, tokenizers, prompts; the four roles: policy (the SFT model, in full or
        with LoRA), reference (a frozen copy, or the policy with its adapters disabled), reward model
        (frozen, its offset subtracted), critic (from the reward model, or a head on the policy);
        optimizer, schedule, KL controller, resume
loop    per iteration: sample one response per prompt with a KV cache; old log-probs, values,
        reference log-probs and scores without gradients; KL-penalised rewards, GAE, whitened
        advantages; ppo.epochs x ppo.minibatches optimizer steps of the clipped losses (stopping
        early past ppo.target_approx_kl); the KL coefficient adapts; metrics; held-out reward
        (and the best policy) and checkpoints at their intervals
save    the policy as a standard HF directory in output_dir/model, curves
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from alignkit.config import PPOConfig
from alignkit.data.prompts import read_prompt_rows
from alignkit.errors import ConfigError, DataError, TrainingDiverged
from alignkit.losses import entropy_from_logprobs, ppo_policy_loss, ppo_value_loss, sequence_nll
from alignkit.models import apply_peft, count_parameters, load_tokenizer
from alignkit.models.loading import load_policy
from alignkit.models.memory import enable_gradient_checkpointing
from alignkit.models.value import PolicyAndValue, critic_from_reward_model, disable_dropout, hidden_size
from alignkit.rl import AdaptiveKLController, FixedKLController, ensemble_scorer
from alignkit.rl.advantages import masked_mean
from alignkit.rl.experience import Conversation, Experience, RewardFn, Roles, experience
from alignkit.rl.rollout import Rollout, sample_rollout, select, token_logprobs
from alignkit.rl.safe import CostConstraint
from alignkit.stages.ppo_metrics import evaluate_reward, iteration_metrics
from alignkit.rl.scoring import combined_scorer, reward_model_scorer
from alignkit.training import engine
from alignkit.training.batching import global_batch, shard
from alignkit.training.loop import resume_step, save_policy, saved_best
from alignkit.training.metrics import MetricsWriter
from alignkit.training.optim import build_optimizer, build_scheduler
from alignkit.training.plots import plot_metrics
from alignkit.training.progress import ProgressBar
from alignkit.training.run import begin_stage, reduce_sum, say, seed_per_process


def run_ppo(cfg: PPOConfig, reward_fn: RewardFn | None = None, cost_fn: RewardFn | None = None) -> Path:
    """Train a policy with PPO; return the saved model directory.

    reward_fn (Python API only): scores (N,) for (prompts, response texts), used instead of a reward
    model: a rule, a judge, or the demo world's oracle. Reward functions (cfg.rewards) are added to
    whichever of the two scores. cost_fn (Python API only): costs (N,) in place of safety.cost_model.
    """
    if reward_fn is None and not cfg.reward_model and not cfg.rewards:
        raise ConfigError("ppo: no reward: set reward_model (a directory written by `alignkit rm`) and/or rewards "
                          "(e.g. [{fn: exact_match}])")
    if not cfg.reward_model and cfg.value_model == "reward":
        raise ConfigError("ppo: value_model=reward starts the critic from the reward model, and there is none; "
                          "use value_model=policy_head")
    # ---------------------------------------------------------------- setup
    accelerator, run_dir, model_dir = begin_stage(cfg, "ppo")
    if model_dir is None:
        return run_dir / "model"
    device = accelerator.device
    tokenizer = load_tokenizer(cfg.model.path, cfg.model.trust_remote_code)
    prompts, rows = read_prompt_rows(cfg.rollout.prompts_path)
    eval_prompts, eval_rows = read_prompt_rows(cfg.rollout.eval_prompts_path) if cfg.rollout.eval_prompts_path \
        else ([], [])
    eval_prompts, eval_rows = eval_prompts[: cfg.rollout.eval_samples], eval_rows[: cfg.rollout.eval_samples]
    ptx_rows = load_ptx_rows(cfg, tokenizer)

    policy = load_policy(cfg.model)  # an SFT adapter is folded in; the result is the reference
    # With LoRA the reference is the same weights with the adapters disabled: one copy in memory.
    # Otherwise a frozen copy, outside the engine: whole on every process, inference only (under
    # ZeRO-3 the policy arrives partitioned, so the copy is loaded from disk instead).
    if accelerator.num_processes > 1 and any(":" in d for d in (cfg.placement.reference_device,
                                                                 cfg.placement.reward_device)):
        raise ConfigError("placement: a numbered device (cuda:1) would put every process's copy on that one device; "
                          "with several processes use \"cpu\" or leave it empty")
    reference = None
    if cfg.peft.method != "lora":
        from_disk = engine.partitioned(accelerator) or cfg.reference_model
        reference_cfg = dataclasses.replace(cfg.model, path=cfg.reference_model or cfg.model.path)
        reference = engine.load_frozen(accelerator, (lambda: load_policy(reference_cfg)) if from_disk else
                                       (lambda: copy.deepcopy(policy)), cfg.placement.reference_device or None)
    policy = apply_peft(policy, cfg.peft)
    reward, offset, reward_tokenizer = None, 0.0, None
    reward_device = cfg.placement.reward_device or None
    if cfg.reward_model:
        reward, offset, reward_tokenizer = engine.frozen_reward_model(accelerator, cfg.reward_model, reward_device)
    if cfg.value_model == "reward" and reward_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise ConfigError(f"value_model=reward starts the critic from {cfg.reward_model}, whose tokenizer differs from "
                          f"the policy's ({cfg.model.path}); the critic reads the policy's tokens: use "
                          "value_model=policy_head")
    critic = critic_from_reward_model(reward.unwrapped()) if cfg.value_model == "reward" else None
    actor = PolicyAndValue(policy, critic, hidden_size(policy), value_offset=offset)
    disable_dropout(actor)  # the PPO ratio starts at exactly 1 only without dropout
    actor.to(device)
    trainable, total = count_parameters(actor)
    say(accelerator, f"policy + critic ({cfg.value_model}) {total:,} parameters, {trainable:,} trainable "
                     f"({cfg.peft.method}); {len(prompts)} prompts; reward offset {offset:+.3f}")

    world = accelerator.num_processes
    global_size = cfg.train.batch_size * world
    iterations = cfg.train.max_steps or max(1, math.ceil(cfg.train.epochs * len(prompts) / global_size))
    if cfg.train.gradient_checkpointing:
        enable_gradient_checkpointing(actor)
    optimizer = build_optimizer(actor, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, iterations)  # one schedule step per iteration
    actor, optimizer = engine.prepare(accelerator, actor, optimizer, batch_size=micro_size(cfg),
                                      grad_accum=cfg.train.grad_accum, max_grad_norm=cfg.optim.max_grad_norm)
    kl_ctl = AdaptiveKLController(cfg.kl.coef, cfg.kl.target, cfg.kl.horizon) if cfg.kl.target \
        else FixedKLController(cfg.kl.coef)
    metrics = MetricsWriter(run_dir, accelerator.is_main_process, cfg.log.tensorboard, cfg.log.report_to, cfg,
                            cfg.log.project)
    seed_per_process(accelerator, cfg.seed)  # weights are alike everywhere; samples should not be
    constraint = cost_constraint(cfg, accelerator, reward_device, cost_fn)  # safe RLHF (rl/safe.py); None: off
    start, best = resume(cfg, run_dir, accelerator, actor, optimizer, scheduler, metrics, kl_ctl, constraint)
    model_score = reward_fn or (reward_model_scorer(reward, reward_tokenizer, offset, cfg.train.eval_batch_size)
                                if reward is not None else None)
    if cfg.reward_ensemble and reward_fn is None:
        members = [engine.frozen_reward_model(accelerator, path, reward_device) for path in cfg.reward_ensemble]
        model_score = ensemble_scorer([model_score, *(reward_model_scorer(m, tok, off, cfg.train.eval_batch_size)
                                                      for m, off, tok in members)], cfg.reward_uncertainty_coef)
    scorer = row_scorer(cfg, model_score)
    roles = Roles(accelerator.unwrap_model(actor), reference, tokenizer, accelerator.autocast,
                  constraint.scorer(scorer) if constraint else scorer, constraint)
    if start == 0 and eval_prompts and cfg.train.eval_every:
        first = evaluate_reward(cfg, accelerator, roles, eval_prompts, eval_rows)
        metrics.write(0, **first)
        if cfg.keep_best:  # the policy PPO starts from is a candidate too: PPO may never beat it
            best = first["eval_reward"]
            save_policy(accelerator, actor, actor_policy(accelerator, actor), tokenizer, run_dir / "best",
                        cfg.model.path, {"eval_reward": best, "iteration": 0})

    # ---------------------------------------------------------------- loop
    with ProgressBar(iterations, start, "ppo", cfg.log.progress and accelerator.is_main_process) as bar:
        for it in range(start, iterations):
            t0 = time.perf_counter()
            indices = shard(global_batch(len(prompts), it, global_size, cfg.seed), accelerator.process_index, world)
            batch = [prompts[i] for i in indices]
            roll, gen_s = rollout_batch(cfg, accelerator, roles, batch)
            t1 = time.perf_counter()
            exp = experience(cfg, roles, roll, batch, kl_ctl.value, micro_size(cfg), [rows[i] for i in indices])
            t2 = time.perf_counter()
            stats = ppo_update(cfg, accelerator, actor, optimizer, roll, exp, ptx_rows, it, tokenizer.pad_token_id)
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            t3 = time.perf_counter()

            row = iteration_metrics(accelerator, roll, exp, stats)  # summed over processes, so every
            row["kl_coef"] = kl_ctl.value                             # process's controller moves alike
            kl_ctl.update(row["kl"], global_size)
            if constraint:  # the reward and cost apart; lambda's step on the mean cost, alike everywhere
                r_sum, c_sum, n = reduce_sum(accelerator, float(constraint.last_rewards.sum()),
                                             float(constraint.last_costs.sum()), float(len(constraint.last_costs)))
                if cfg.safety.limit_from_start and it == 0:  # as safe as the starting policy, at least
                    constraint.limit = c_sum / n
                row.update(penalized_score=row["reward"], reward=r_sum / n, cost=c_sum / n, **{"lambda": constraint.lam},
                           cost_limit=constraint.limit, cost_slack=constraint.limit - c_sum / n)
                constraint.update(c_sum / n)
            done = it + 1
            seconds = t3 - t0
            tokens = float(roll.response_mask.sum())
            gen_tok, train_tok = reduce_sum(accelerator, tokens, float(roll.attention_mask.sum()) * stats["passes"])
            row.update(lr=lr, episodes=done * global_size,
                       episodes_per_s=global_size / seconds, gen_s=gen_s, score_s=t2 - t1, train_s=t3 - t2,
                       gen_tokens_per_s=gen_tok / max(gen_s, 1e-9), train_tokens_per_s=train_tok / max(t3 - t2, 1e-9))
            if not math.isfinite(row["policy_loss"]) or not math.isfinite(row["value_loss"]):
                raise TrainingDiverged(f"ppo: the loss is not finite at iteration {done}; lower optim.lr")
            if cfg.train.eval_every and eval_prompts and (done % cfg.train.eval_every == 0 or done == iterations):
                row.update(evaluate_reward(cfg, accelerator, roles, eval_prompts, eval_rows))
                feasible = constraint is None or row["eval_cost"] <= constraint.limit  # safe RLHF: within the limit
                if cfg.keep_best and feasible and row["eval_reward"] > best:
                    best = row["eval_reward"]
                    save_policy(accelerator, actor, actor_policy(accelerator, actor), tokenizer, run_dir / "best",
                                cfg.model.path, {"eval_reward": best, "iteration": done})
                    row["best_eval_reward"] = best
            if done % cfg.log.every == 0 or done == iterations:
                metrics.write(done, **row)
            bar.update(done, reward=row["reward"], kl=row["kl"], eps_s=round(row["episodes_per_s"], 1))
            if cfg.checkpoint.save_every and done % cfg.checkpoint.save_every == 0:
                engine.save_resumable(run_dir, done, accelerator, actor, optimizer, scheduler,
                                      keep_last=cfg.checkpoint.keep_last, global_batch=global_size,
                                      extra={"kl_coef": kl_ctl.value, "best_eval_reward": best,
                                             "lambda": constraint.lam if constraint else None,
                                             "cost_limit": constraint.limit if constraint else None})

    # ---------------------------------------------------------------- save
    save_policy(accelerator, actor, actor_policy(accelerator, actor), tokenizer, model_dir, cfg.model.path)
    if accelerator.is_main_process:
        curves = plot_metrics(metrics.path, title="ppo")
        say(accelerator, f"[green]saved {model_dir}" + (f" (best held-out reward {best:.3f} in "
                                                        f"{run_dir / 'best'})" if cfg.keep_best else "")
            + f"; curves in {curves}")
    accelerator.wait_for_everyone()
    metrics.close()
    return model_dir


# -------------------------------------------------------------------- rollout and experience


def rollout_batch(cfg: PPOConfig, accelerator: Any, roles: Roles, batch: list[Conversation],
                  ) -> tuple[Rollout, float]:
    """One sampled response per prompt, with the KV cache (generate); seconds it took."""
    t = time.perf_counter()
    policy = roles.module.policy
    r = cfg.rollout
    with roles.autocast():  # the precision of the training forward pass (bf16), not fp32 weights
        roll = sample_rollout(policy, roles.tokenizer, batch, r.max_new_tokens, r.temperature, r.top_p, r.top_k)
    return roll, time.perf_counter() - t


def cost_constraint(cfg: PPOConfig, accelerator: Any, device: str | None, cost_fn: RewardFn | None
                    ) -> CostConstraint | None:
    """The cost model (frozen, beside the reward model) or cost_fn, and the multiplier; None when neither."""
    s = cfg.safety
    if not s.cost_model and cost_fn is None:
        return None
    if cost_fn is None:
        cost, _, cost_tokenizer = engine.frozen_reward_model(accelerator, s.cost_model, device)
        cost_fn = reward_model_scorer(cost, cost_tokenizer, 0.0, cfg.train.eval_batch_size)
    return CostConstraint(cost_fn, s.cost_limit, s.lambda_init, s.lambda_lr, s.multiplier == "lagrange", s.normalize,
                          s.unsafe_only)


def row_scorer(cfg: PPOConfig, model_score: RewardFn | None) -> Any:
    """Roles.score: (prompts, responses, prompt rows) -> scores: the reward model's (or reward_fn's),
    plus the reward functions by weight when cfg.rewards names any."""
    if not cfg.rewards:
        return lambda prompts, responses, rows: model_score(prompts, responses)
    combined = combined_scorer(cfg.rewards, model_score, cfg.reward_model_weight)
    return lambda prompts, responses, rows: combined(prompts, responses, rows)[0]


def micro_size(cfg: PPOConfig) -> int:
    return cfg.train.batch_size // (cfg.ppo.minibatches * cfg.train.grad_accum)


# -------------------------------------------------------------------- the update


def ppo_update(cfg: PPOConfig, accelerator: Any, actor: Any, optimizer: Any, roll: Rollout,
               exp: Experience, ptx_rows: list, iteration: int, pad_id: int) -> dict[str, float]:
    """ppo.epochs passes of ppo.minibatches optimizer steps over the rollout batch. Each sequence's
    loss is the mean over its response tokens, averaged over the minibatch's sequences. Stops the
    iteration's remaining minibatches once the approx-KL to the rollout policy passes the bound."""
    p = cfg.ppo
    n = roll.sequences.shape[0]
    mb = n // p.minibatches
    micro = micro_size(cfg)
    mask = roll.response_mask
    sums = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "clip_fraction": 0.0, "approx_kl": 0.0,
            "value_clip_fraction": 0.0, "ptx_loss": 0.0}
    steps = 0
    passes = 0.0  # rollout batches' worth of sequences run forward and backward (for tokens/s)
    for _ in range(p.epochs):
        order = torch.randperm(n, device=mask.device)
        for m in range(p.minibatches):
            step_kl = 0.0
            for k in range(cfg.train.grad_accum):
                idx = order[m * mb + k * micro: m * mb + (k + 1) * micro]
                sub = select(roll, idx)
                w = sub.responses.shape[1]
                m_, old_, adv_, v_old, ret = (x[idx][:, :w] for x in (mask, exp.old_logp, exp.advantages,
                                                                      exp.values, exp.returns))
                with engine.micro_batch(accelerator, actor, last=k == cfg.train.grad_accum - 1):
                    logits, values = actor(sub.sequences, sub.attention_mask, sub.prompt_width)
                    logp, logp_all = token_logprobs(logits, sub.responses, cfg.rollout.temperature, with_all=True)
                    logp = logp * m_
                    pl, ps = ppo_policy_loss(logp, old_, adv_, m_, p.clip)
                    vl, vs = ppo_value_loss(values * m_, v_old, ret, m_, p.value_clip)
                    # The entropy is only logged unless it is in the loss: then it needs no graph.
                    with nullcontext() if p.entropy_coef else torch.no_grad():
                        entropy = masked_mean(entropy_from_logprobs(logp_all), m_, dim=1)
                    loss = pl + p.vf_coef * vl - p.entropy_coef * entropy
                    total = loss.sum() / mb
                    if ptx_rows:
                        ptx = ptx_loss(cfg, accelerator, actor, ptx_rows, iteration, steps, k, pad_id)
                        total = total + p.ptx_coef * ptx / cfg.train.grad_accum
                        sums["ptx_loss"] += float(ptx.detach()) / cfg.train.grad_accum
                    engine.backward(accelerator, total)
                share = len(idx) / mb
                sums["policy_loss"] += float(pl.detach().mean()) * share
                sums["value_loss"] += float(vl.detach().mean()) * share
                sums["entropy"] += float(entropy.detach().mean()) * share
                sums["clip_fraction"] += float(ps["clip_fraction"]) * share
                sums["value_clip_fraction"] += float(vs["value_clip_fraction"]) * share
                step_kl += float(ps["approx_kl"]) * share
            if cfg.optim.max_grad_norm > 0:
                accelerator.clip_grad_norm_(actor.parameters(), cfg.optim.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            sums["approx_kl"] += step_kl
            steps += 1
            passes += mb / n
            # Every process must agree to stop, so the decision uses the mean over all of them.
            (mean_kl,) = reduce_sum(accelerator, step_kl)
            if p.target_approx_kl and mean_kl / accelerator.num_processes > p.target_approx_kl:
                break
        else:
            continue
        break
    out = {k: v / steps for k, v in sums.items()}
    out["optimizer_steps"] = steps
    out["passes"] = passes
    return out


def load_ptx_rows(cfg: PPOConfig, tokenizer: Any) -> list:
    """SFT examples for PPO-ptx (tokenised with response-only labels, as in SFT)."""
    if not cfg.ppo.ptx_coef:
        return []
    from alignkit.config import DataConfig
    from alignkit.data import build_sft_data

    data = build_sft_data(DataConfig(train_path=cfg.ppo.ptx_path, eval_fraction=0.0, packing="off"), tokenizer,
                          cfg.seed)
    if not data.train:
        raise DataError(f"{cfg.ppo.ptx_path}: no SFT rows left for PPO-ptx after filtering")
    return data.train


def ptx_loss(cfg: PPOConfig, accelerator: Any, actor: Any, rows: list, iteration: int, step: int,
             micro: int, pad_id: int) -> torch.Tensor:
    """Token-mean NLL of a batch of SFT rows under the policy (InstructGPT's PPO-ptx term)."""
    from alignkit.data import collate

    position = (iteration * cfg.ppo.epochs * cfg.ppo.minibatches + step) * cfg.train.grad_accum + micro
    world = accelerator.num_processes  # each process takes its own share of a global SFT batch
    idx = shard(global_batch(len(rows), position, cfg.ppo.ptx_batch_size * world, cfg.seed + 1),
                accelerator.process_index, world)
    batch = {k: v.to(accelerator.device) for k, v in collate([rows[i] for i in idx], pad_id).items()}
    labels = batch.pop("labels")
    policy = accelerator.unwrap_model(actor).policy
    nll, tokens = sequence_nll(policy(**batch, use_cache=False).logits, labels)
    return nll.sum() / tokens.sum().clamp(min=1)


# -------------------------------------------------------------------- metrics, evaluation, saving


def resume(cfg: PPOConfig, run_dir: Path, accelerator: Any, actor: Any, optimizer: Any, scheduler: Any,
           metrics: MetricsWriter, kl_ctl: Any, constraint: CostConstraint | None = None) -> tuple[int, float]:
    """(iteration to start from, best held-out reward so far); restores the whole state when resuming."""
    start, extra = resume_step(cfg, run_dir, accelerator, actor, optimizer, scheduler, metrics,
                               cfg.train.batch_size * accelerator.num_processes, unit="iteration")
    if not extra:
        return start, -math.inf
    kl_ctl.value = extra["kl_coef"]
    if constraint and extra.get("lambda") is not None:
        constraint.lam, constraint.limit = float(extra["lambda"]), float(extra["cost_limit"])
    best = float(extra["best_eval_reward"])
    return start, max(best, saved_best(run_dir))


def actor_policy(accelerator: Any, actor: Any) -> Any:
    """The policy inside the actor (without the value head and the engine's wrapper)."""
    return accelerator.unwrap_model(actor).policy
