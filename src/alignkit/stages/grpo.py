"""Critic-free RL: GRPO and its kin (Dr. GRPO, RLOO, REINFORCE++). Each prompt's n sampled responses
form a group; a response's advantage is its reward against the group's (rl/group.py), so no value
model is trained. Rewards come from programs (a verifier, a format check, a refusal rule), a reward
model, or both (rl/scoring.py).

setup   run dir, tokenizer, prompts with their rows (fields the reward functions read), the policy
        (+ PEFT, dropout off), the reference only when kl.coef > 0 (a frozen copy, or the LoRA policy
        with its adapters off), the scorer, and the shared step loop's state (training/loop.py)
loop    train_steps, the loop every stage shares. Every group.epochs x group.minibatches optimizer
        steps begin with a generation: train.batch_size prompts per process, n responses each in one
        generate with the KV cache; rewards less the overlong penalty; with dynamic sampling,
        groups without signal replaced by groups of further prompts; old and reference log-probs;
        advantages. Each optimizer step trains on one minibatch of the generation: the clipped
        surrogate with asymmetric bounds (+ beta x k3 per token), aggregated as group.aggregation
        says, normalised over the whole global minibatch
save    the policy as a standard HF directory (output_dir/model; best/ when kept), curves

Each group stays on the process that sampled it, so its advantages need no communication; the loss
is normalised over every process's responses (or tokens), so 2 processes train as 1 on the same
global batch.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch

from alignkit.config import GRPOConfig
from alignkit.data.prompts import read_prompt_rows
from alignkit.errors import ConfigError
from alignkit.losses.grpo import clipped_surrogate, loss_denominator, loss_sum
from alignkit.losses import entropy_from_logprobs
from alignkit.models import apply_peft, count_parameters, load_tokenizer
from alignkit.models.loading import load_policy
from alignkit.models.value import disable_dropout
from alignkit.rl.group import informative_groups
from alignkit.rl.group_rollout import Generation, Sampled, choose_groups, prepare_generation, sample_groups, take
from alignkit.rl.kl import kl_estimate
from alignkit.rl.rollout import token_logprobs
from alignkit.rl.safe import CostConstraint
from alignkit.rl.scoring import Scorer, combined_scorer, reward_model_scorer
from alignkit.rl.shared_prompt import can_share, response_logits
from alignkit.training import engine
from alignkit.training.batching import global_batch, shard
from alignkit.training.loop import close_run, save_policy, saved_best, start_training, train_steps
from alignkit.training.run import begin_stage, reduce_sum, say, seed_per_process

Conversation = list[dict[str, str]]


def run_grpo(cfg: GRPOConfig) -> Path:
    """Train a policy with a critic-free estimator; return the saved model directory."""
    # ---------------------------------------------------------------- setup
    accelerator, run_dir, model_dir = begin_stage(cfg, "grpo")
    if model_dir is None:
        return run_dir / "model"
    device, world, rank = accelerator.device, accelerator.num_processes, accelerator.process_index
    tokenizer = load_tokenizer(cfg.model.path, cfg.model.trust_remote_code)
    prompts, rows = read_prompt_rows(cfg.rollout.prompts_path)
    eval_prompts, eval_rows = read_prompt_rows(cfg.rollout.eval_prompts_path) if cfg.rollout.eval_prompts_path \
        else ([], [])
    eval_prompts, eval_rows = eval_prompts[: cfg.rollout.eval_samples], eval_rows[: cfg.rollout.eval_samples]
    if accelerator.num_processes > 1 and any(":" in d for d in (cfg.placement.reference_device,
                                                                 cfg.placement.reward_device)):
        raise ConfigError("placement: a numbered device (cuda:1) would put every process's copy on that one device; "
                          "with several processes use \"cpu\" or leave it empty")

    policy = load_policy(cfg.model)  # an SFT adapter is folded in
    reference = None  # with kl.coef 0 none is loaded; with LoRA it is the policy with adapters off
    if cfg.kl.coef and cfg.peft.method != "lora":
        ref_cfg = cfg.model
        load = (lambda: load_policy(ref_cfg)) if engine.partitioned(accelerator) else (lambda: copy.deepcopy(policy))
        reference = engine.load_frozen(accelerator, load, cfg.placement.reference_device or None)
    policy = apply_peft(policy, cfg.peft)
    disable_dropout(policy)  # the ratio starts at exactly 1 only without dropout
    policy.to(device)
    score, constraint = build_scorer(cfg, accelerator)
    trainable, total = count_parameters(policy)
    n, updates = cfg.group.n, cfg.updates_per_generation()
    gen_size = cfg.train.batch_size * world  # prompts per generation, all processes
    generations = cfg.train.max_steps // updates or max(1, -(-int(cfg.train.epochs * len(prompts)) // gen_size))
    minibatch = cfg.train.batch_size * n // cfg.group.minibatches  # responses per process per step
    micro = minibatch // cfg.train.grad_accum
    how = cfg.aggregation()
    say(accelerator, f"policy {total:,} parameters, {trainable:,} trainable ({cfg.peft.method}); {len(prompts)} "
                     f"prompts; {cfg.group.advantage}, {n} responses per prompt, {gen_size} prompts per generation, "
                     f"{updates} optimizer step(s) each; loss {how}; KL {cfg.kl.coef or 'off'}"
                     + (f" ({cfg.kl.mode})" if cfg.kl.coef else ""))
    seed_per_process(accelerator, cfg.seed)  # weights alike everywhere; samples should not be
    run = start_training(cfg, accelerator, policy, run_dir, len(prompts), "prompts",
                         total_steps=generations * updates, global_size=gen_size, micro_size=micro)
    model = run.model
    module = accelerator.unwrap_model(model)
    if constraint:  # lambda and the limit go into every checkpoint and come back on resume
        run.state = lambda: {"lambda": constraint.lam, "cost_limit": constraint.limit}
        if run.extra.get("lambda") is not None:
            constraint.lam, constraint.limit = float(run.extra["lambda"]), float(run.extra["cost_limit"])
    autocast = accelerator.autocast

    reduce = lambda *values: reduce_sum(accelerator, *values)  # noqa: E731
    share = cfg.group.share_prompt and can_share(module)

    def sample(indices: list[int]) -> Sampled:
        out = sample_groups(cfg, module, tokenizer, autocast, score, [prompts[i] for i in indices],
                            [rows[i] for i in indices], share)
        out.prompt_ids = list(indices)
        return out

    # ---------------------------------------------------------------- loop
    current: dict[str, Any] = {"step": run.start, "generation": None}
    pending: dict[str, float] = {}  # generation figures for the next metrics row
    timers = {"gen_s": 0.0, "prep_s": 0.0}

    def batches(indices: list[int], mine: list[list[int]]) -> tuple[list[Generation], float]:
        # The loop draws global batches of rows; a GRPO step's data is a slice of the current
        # generation instead, located by the step number alone (so a resumed run finds its place).
        g, j = divmod(current["step"], updates)
        current["step"] += 1
        if j == 0:
            current["generation"] = new_generation(g)
        gen: Generation = current["generation"]
        if gen is None:  # the settings check refuses a changed group.epochs/minibatches before this
            raise ConfigError(f"grpo: step {current['step']} falls inside a generation; resume from a checkpoint "
                              f"taken at a generation boundary (every {updates} steps)")
        epoch, m = divmod(j, cfg.group.minibatches)
        order = torch.randperm(gen.roll.sequences.shape[0], generator=torch.Generator().manual_seed(
            cfg.seed * 1_000_003 + g * 1_009 + epoch)) if cfg.group.minibatches > 1 else \
            torch.arange(gen.roll.sequences.shape[0])
        part = order[m * minibatch:(m + 1) * minibatch]
        payloads = [take(gen, part[k * micro:(k + 1) * micro]) for k in range(cfg.train.grad_accum)]
        # Every process trains on the same number of responses; only token_mean needs a collective.
        tokens = reduce_sum(accelerator, float(gen.roll.response_mask[part].sum()))[0] if how == "token_mean" else 0.0
        return payloads, loss_denominator(how, float(len(part) * world), tokens, cfg.rollout.max_new_tokens)

    def new_generation(g: int) -> Generation:
        t0 = time.perf_counter()
        first = sample(shard(global_batch(len(prompts), g, gen_size, cfg.seed), rank, world))
        if constraint:  # lambda's step on the mean cost of the policy's own samples, alike everywhere
            c_sum, c_n = reduce(float(first.parts["cost"].sum()), float(first.parts["cost"].numel()))
            if cfg.safety.limit_from_start and g == 0:
                constraint.limit = c_sum / c_n
            current["safety"] = {"lambda": constraint.lam, "cost_limit": constraint.limit,
                                 "cost_slack": constraint.limit - c_sum / c_n}
            constraint.update(c_sum / c_n)
        def extra(r: int) -> Sampled:
            # Further prompts for dynamic sampling come from a stream of their own, position by
            # position (max_sampling_rounds per generation), so no round draws the same batch again.
            at = g * cfg.group.max_sampling_rounds + r - 1
            return sample(shard(global_batch(len(prompts), at, gen_size, cfg.seed + 7_919), rank, world))

        kept, rounds = choose_groups(cfg, reduce, first, extra, tokenizer.pad_token_id)
        t1 = time.perf_counter()
        gen = prepare_generation(cfg, reduce, autocast, module, reference, kept, micro, share)
        timers["gen_s"] += t1 - t0
        timers["prep_s"] += time.perf_counter() - t1
        add_generation_figures(pending, first, kept, rounds, gen)
        return gen

    def loss(p: Generation) -> tuple[torch.Tensor, dict[str, float]]:
        return policy_loss(cfg, model, p, how, share)

    def summarize(sums: dict[str, float], seconds: float, done: int) -> dict[str, float]:
        row = step_figures(sums, seconds, accelerator, pending, timers)
        row.update(current.pop("safety", {}))
        pending.clear()
        timers.update(gen_s=0.0, prep_s=0.0)
        return row

    best = {"value": saved_best(run_dir) if run.start else float("-inf")}

    def on_eval(step: int, figures: dict[str, float]) -> None:
        if cfg.keep_best and figures["eval_reward"] > best["value"]:
            best["value"] = figures["eval_reward"]
            save_policy(accelerator, model, module, tokenizer, run_dir / "best", cfg.model.path,
                        {"eval_reward": best["value"], "step": step})

    evaluate = (lambda: evaluate_reward(cfg, accelerator, module, tokenizer, score, eval_prompts, eval_rows)) \
        if eval_prompts else None
    train_steps(cfg, run, name="grpo", batches=batches, loss=loss, summarize=summarize, evaluate=evaluate,
                on_eval=on_eval, show=("reward", "kl", "responses_per_s"))

    # ---------------------------------------------------------------- save
    save_policy(accelerator, model, module, tokenizer, model_dir, cfg.model.path)
    if cfg.keep_best and accelerator.is_main_process:
        say(accelerator, f"best held-out reward {best['value']:.3f} in {run_dir / 'best'}")
    return close_run(run, model_dir, "grpo")


def build_scorer(cfg: GRPOConfig, accelerator: Any) -> tuple[Scorer, CostConstraint | None]:
    """The reward functions and/or the reward model (frozen, beside the engine), added by weight; with
    safety.cost_model, penalised by the cost through the multiplier (rl/safe.py), which is returned too."""
    model_score = None
    device = cfg.placement.reward_device or None
    if cfg.reward_model:
        reward, offset, reward_tokenizer = engine.frozen_reward_model(accelerator, cfg.reward_model, device)
        model_score = reward_model_scorer(reward, reward_tokenizer, offset, cfg.train.eval_batch_size)
    score = combined_scorer(cfg.rewards, model_score, cfg.reward_model_weight)
    if not cfg.safety.cost_model:
        return score, None
    s = cfg.safety
    cost, _, cost_tokenizer = engine.frozen_reward_model(accelerator, s.cost_model, device)
    constraint = CostConstraint(reward_model_scorer(cost, cost_tokenizer, 0.0, cfg.train.eval_batch_size), s.cost_limit,
                                s.lambda_init, s.lambda_lr, s.multiplier == "lagrange", s.normalize, s.unsafe_only)
    return constraint.part_scorer(score), constraint


# -------------------------------------------------------------------- the loss


def policy_loss(cfg: GRPOConfig, model: Any, p: Generation, how: str,
                share: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
    """One micro-batch: the clipped surrogate per token (+ beta x k3 against the reference), summed as
    the aggregation's numerator (losses/grpo.loss_sum); its figures summed for the metrics."""
    roll, mask = p.roll, p.roll.response_mask
    logits = response_logits(model, roll, share)  # position t predicts token t + 1
    logp, logp_all = token_logprobs(logits, roll.responses, cfg.rollout.temperature, with_all=True)
    # Zero past each response's end, as the old and reference log-probs are: a pad token's log-prob
    # can be below -88, where k3's exp overflows and inf x 0 would make the loss NaN.
    logp = logp * mask.to(logp.dtype)
    # One update per generation: the sampling policy is this one, so the ratio is exactly 1 and
    # only its gradient matters (no second forward pass for the old log-probs).
    old = p.old_logp if p.old_logp is not None else logp.detach()
    per_token, stats = clipped_surrogate(logp, old, p.advantages, mask, cfg.group.clip_low, cfg.group.clip_high)
    m = mask.to(logp.dtype)
    tokens = float(m.sum())
    sums = {"surrogate": float((per_token.detach() * m).sum()), "tokens": tokens, "responses": float(mask.shape[0]),
            "clip_low": float(stats["clip_low_fraction"]) * tokens, "clip_high": float(stats["clip_high_fraction"]) * tokens}
    if p.ref_logp is not None:  # GRPO's KL term (Shao et al. 2024, eq. 4): k3, unbiased and never negative
        kl = kl_estimate(logp, p.ref_logp, "k3")
        per_token = per_token + cfg.kl.coef * kl
        sums["kl"] = float((kl.detach() * m).sum())
    with torch.no_grad():
        sums["entropy"] = float((entropy_from_logprobs(logp_all) * m).sum())
    return loss_sum(per_token, mask, how), sums


# -------------------------------------------------------------------- figures and evaluation


def add_generation_figures(pending: dict[str, float], first: Sampled, kept: Sampled, rounds: int,
                           gen: Generation) -> None:
    """Sums for the next metrics row: rewards of the first sample of prompts (the policy's own, before
    dynamic sampling chooses), each part's, the groups' spread, the share of signal-free groups
    before and after choosing, response lengths and the generated tokens."""
    r = first.rewards
    add = lambda k, v: pending.__setitem__(k, pending.get(k, 0.0) + float(v))  # noqa: E731
    add("g_responses", r.numel())
    add("g_groups", r.shape[0])
    add("g_reward", r.sum())
    add("g_reward_std", r.std(dim=1).sum())  # each group's spread, summed over groups
    add("g_zero_signal", (~informative_groups(r)).sum())
    add("g_zero_signal_kept", (~informative_groups(kept.rewards)).sum())
    add("g_kept_groups", kept.rewards.shape[0])
    add("g_rounds", rounds)
    add("g_sampled", r.numel() * (1 + rounds))  # dynamic sampling's extra batches are the first one's size
    add("g_generations", 1)
    for name, values in first.parts.items():
        add(f"g_part/{name}", values.sum())
        add(f"g_part_std/{name}", values.view(r.shape).std(dim=1).sum())
    if gen.kl_tokens:  # the KL spent in the reward (kl.mode=reward, reinforce_pp): k1 per token
        add("g_kl", gen.kl_sum)
        add("g_kl_tokens", gen.kl_tokens)
    add("g_length", first.roll.response_mask.sum())
    add("g_no_eos", (~first.roll.ended).sum())
    add("g_train_responses", kept.rewards.numel())


def step_figures(sums: dict[str, float], seconds: float, accelerator: Any, pending: dict[str, float],
                 timers: dict[str, float]) -> dict[str, float]:
    """A metrics row: the loss-side figures of the window (summed over processes) and the figures of
    the generations made in it."""
    tokens = max(sums["tokens"], 1.0)
    row = {"policy_loss": sums["surrogate"] / tokens, "entropy": sums["entropy"] / tokens,
           "clip_low_fraction": sums["clip_low"] / tokens, "clip_high_fraction": sums["clip_high"] / tokens}
    if "kl" in sums:
        row["kl"] = sums["kl"] / tokens
    train_s = max(seconds - timers["gen_s"] - timers["prep_s"], 1e-9)
    row["train_tokens_per_s"] = sums["tokens"] / train_s
    keys = sorted(pending)
    if keys:
        g = dict(zip(keys, reduce_sum(accelerator, *[pending[k] for k in keys])))
        responses, groups = g["g_responses"], g["g_groups"]
        row.update(reward=g["g_reward"] / responses, reward_group_std=g["g_reward_std"] / groups,
                   zero_signal_share=g["g_zero_signal"] / groups, response_length=g["g_length"] / responses,
                   no_eos=g["g_no_eos"] / responses, gen_s=timers["gen_s"], prep_s=timers["prep_s"],
                   gen_tokens_per_s=g["g_length"] / max(timers["gen_s"], 1e-9),
                   responses_per_s=g["g_train_responses"] / max(seconds, 1e-9), sampled_responses=g["g_sampled"])
        if "g_kl" in g:
            row["kl"] = g["g_kl"] / max(g["g_kl_tokens"], 1.0)
        if g["g_rounds"]:
            row.update(sampling_rounds=g["g_rounds"] / g["g_generations"],
                       zero_signal_kept_share=g["g_zero_signal_kept"] / g["g_kept_groups"])
        for k in keys:
            if k.startswith("g_part/"):
                row[f"reward/{k[7:]}"] = g[k] / responses
            elif k.startswith("g_part_std/"):
                row[f"reward_group_std/{k[11:]}"] = g[k] / groups
    return row


@torch.no_grad()
def evaluate_reward(cfg: GRPOConfig, accelerator: Any, policy: Any, tokenizer: Any, score: Scorer,
                    prompts: list[Conversation], rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean reward (and each part's) of the policy's greedy responses to the held-out prompts."""
    from alignkit.models.generate import generate_responses

    names = [str(spec.get("name", spec.get("fn"))) for spec in cfg.rewards] + (["reward_model"] if cfg.reward_model else []) \
        + (["cost"] if cfg.safety.cost_model else [])
    keys = ["eval_reward", "eval_words", "n", *(f"eval_reward/{k}" for k in names)]  # alike on every process
    sums = dict.fromkeys(keys, 0.0)
    # In lockstep under ZeRO-3, where generating is a collective: every process the same batches.
    for part, real in engine.lockstep(list(range(len(prompts))), accelerator.process_index,
                                      accelerator.num_processes, cfg.train.eval_batch_size):
        convs = [prompts[i] for i in part]
        with accelerator.autocast():
            texts = generate_responses(policy, tokenizer, convs, cfg.rollout.max_new_tokens,
                                       batch_size=cfg.train.eval_batch_size)
        if real:
            total, parts = score(convs, texts, [rows[i] for i in part])
            sums["eval_reward"] += float(total.sum())
            sums["eval_words"] += sum(len(t.split()) for t in texts)
            sums["n"] += len(part)
            for k, v in parts.items():
                sums[f"eval_reward/{k}"] += float(v.sum())
    totals = dict(zip(keys, reduce_sum(accelerator, *[sums[k] for k in keys])))
    count = max(totals.pop("n"), 1.0)
    return {k: v / count for k, v in totals.items()}
