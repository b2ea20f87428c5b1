"""PPO's experience: what a batch of sampled responses becomes before the update, computed without
gradients (Ziegler et al. 2019, Stiennon et al. 2020; the N implementation details of RLHF with PPO,
Huang et al. 2024): the rollout policy's log-probs and values, the reference's log-probs, the scores,
per-token KL-penalised rewards, GAE advantages (whitened) and returns.
"""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable

import torch

from alignkit.rl.advantages import gae, whiten
from alignkit.rl.kl import kl_penalized_rewards
from alignkit.rl.rollout import Rollout, decode_responses, response_logprobs, select, token_logprobs

Conversation = list[dict[str, str]]
RewardFn = Callable[[list[Conversation], list[str]], torch.Tensor]
RowScorer = Callable[[list[Conversation], list[str], list[dict[str, Any]]], torch.Tensor]


@dataclass
class Roles:
    """The models PPO samples, scores and compares with (the trained actor is also the engine's)."""

    module: Any
    """The actor (policy + value head) without its DDP wrapper, for passes that sync no gradients."""
    reference: Any
    """The frozen reference; None when it is the policy with its LoRA adapters disabled."""
    tokenizer: Any
    autocast: Callable[[], Any]
    """The training forward pass's precision context (bf16 autocast, or nothing)."""
    score: RowScorer
    """(prompts, response texts, prompt rows) -> scores (N,): a reward model, an ensemble, a function,
    reward functions reading the rows' fields, or a weighted sum of them (rl/scoring.py)."""
    constraint: Any = None
    """Safe RLHF's CostConstraint (rl/safe.py) when `score` is its penalised scorer: it keeps the last
    call's rewards and costs apart."""


@dataclass
class Experience:
    """Per-token (B, T) tensors over the rollout's response positions (0 past each response), and the
    per-response (B,) scores."""

    old_logp: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    ref_logp: torch.Tensor | None = None
    raw_scores: torch.Tensor | None = None
    """What the scorer said, before clipping and the no-EOS penalty."""
    scores: torch.Tensor | None = None
    rewards: torch.Tensor | None = None
    """The KL-penalised per-token rewards GAE ran on."""
    kl: torch.Tensor | None = None


@torch.no_grad()
def experience(cfg: Any, roles: Roles, roll: Rollout, batch: list[Conversation], kl_coef: float,
               chunk: int, rows: list[dict[str, Any]] | None = None) -> Experience:
    """Everything the update needs for `roll` (sampled for `batch`, whose prompt rows are `rows`), in
    forward passes of `chunk` sequences. `cfg` is a PPOConfig (rollout, ppo and kl sections)."""
    actor = roles.module
    actor.eval()
    old_logp, values = [], []
    width = roll.responses.shape[1]
    for s in range(0, roll.sequences.shape[0], chunk):
        part = select(roll, slice(s, s + chunk))
        logits, v = actor(part.sequences, part.attention_mask, part.prompt_width)
        old_logp.append(widen(token_logprobs(logits, part.responses, cfg.rollout.temperature), width))
        values.append(widen(v, width))
    mask = roll.response_mask
    old_logp = torch.cat(old_logp) * mask
    values = torch.cat(values) * mask
    ref_logp = reference_logprobs(roles, roll, chunk, cfg.rollout.temperature)

    texts = decode_responses(roles.tokenizer, roll)
    raw = roles.score(batch, texts, rows if rows is not None else [{} for _ in batch]).to(values.device).float()
    scores = final_scores(raw, roll.ended, cfg.rollout.no_eos_penalty, cfg.ppo.reward_clip)

    rewards, kl = kl_penalized_rewards(scores, old_logp, ref_logp, mask, kl_coef, cfg.kl.estimator)
    if cfg.ppo.whiten_rewards:
        rewards = whiten(rewards, mask, shift_mean=False)
    advantages, returns = gae(rewards, values, mask, cfg.ppo.gamma, cfg.ppo.lam)
    if cfg.ppo.whiten_advantages:
        advantages = whiten(advantages, mask)
    actor.train()
    return Experience(old_logp, values, advantages, returns, ref_logp, raw, scores, rewards, kl)


def final_scores(raw: torch.Tensor, ended: torch.Tensor, no_eos_penalty: float, clip: float) -> torch.Tensor:
    """The scores PPO optimises: clipped to [-clip, clip] (0: no clipping), then no_eos_penalty
    subtracted where the response never ended (it has no end to judge; TRL's missing_eos_penalty)."""
    scores = raw.clamp(-clip, clip) if clip else raw
    return scores - no_eos_penalty * (~ended.bool()).to(scores.dtype)


def reference_logprobs(roles: Roles, roll: Rollout, chunk: int, temperature: float) -> torch.Tensor:
    """(B, T) log-probs of the sampled responses under the reference, in the policy's precision (so
    the KL is exactly 0 at the start)."""
    policy = roles.module.policy
    ctx = policy.disable_adapter() if roles.reference is None else nullcontext()
    model = policy if roles.reference is None else roles.reference
    device = next(model.parameters()).device  # placement.reference_device may keep it elsewhere
    out = []
    with ctx, roles.autocast():
        for s in range(0, roll.sequences.shape[0], chunk):
            part = moved(select(roll, slice(s, s + chunk)), device)
            logp = response_logprobs(model, part, temperature).to(roll.sequences.device)
            out.append(widen(logp, roll.responses.shape[1]))
    return torch.cat(out)


def moved(roll: Rollout, device: Any) -> Rollout:
    """The rollout's tensors on `device` (the same rollout when they are there already)."""
    if roll.sequences.device == device:
        return roll
    return dataclasses.replace(roll, sequences=roll.sequences.to(device), attention_mask=roll.attention_mask.to(device),
                               response_mask=roll.response_mask.to(device))


def widen(x: torch.Tensor, width: int) -> torch.Tensor:
    """Pad (B, w) per-token values with zeros back to the rollout's response width."""
    return torch.nn.functional.pad(x, (0, width - x.shape[1]))
