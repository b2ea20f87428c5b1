"""A generation of critic-free RL (the grpo stage's data): each prompt's n responses sampled in one
batched generate, scored, less the overlong penalty; DAPO's dynamic sampling choosing the groups with
signal; the old and reference log-probs; the advantages. Pure of the engine: where processes must
agree (the dynamic-sampling rounds, REINFORCE++'s batch whitening), `reduce` sums scalars over them.
`cfg` is a GRPOConfig.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from alignkit.rl.group import group_advantages, informative_groups, overlong_penalty, reinforce_pp_returns
from alignkit.rl.kl import kl_estimate
from alignkit.rl.rollout import Rollout, concat_rollouts, decode_responses, response_logprobs, sample_rollout, select

Conversation = list[dict[str, str]]
Scorer = Callable[[list[Conversation], list[str], list[dict[str, Any]]], tuple[torch.Tensor, dict[str, torch.Tensor]]]
Reduce = Callable[..., list[float]]
"""reduce(*scalars) -> their sums over every process (one process: the scalars themselves)."""


@dataclass
class Sampled:
    """Responses sampled for some prompts, n per prompt in consecutive rows, with their rewards."""

    roll: Rollout
    rewards: torch.Tensor
    """(groups, n): the scorer's total less the overlong penalty."""
    parts: dict[str, torch.Tensor]
    """Each reward part's own values, (groups * n,)."""
    prompt_ids: list[int] = dataclasses.field(default_factory=list)
    """The prompts' indices in the prompts file, one per group (empty when unknown)."""


@dataclass
class Generation:
    """One generation's training data on this process (groups of n consecutive rows)."""

    roll: Rollout
    advantages: torch.Tensor
    """(B,) one per response for the group estimators, (B, T) per token for reinforce_pp."""
    old_logp: torch.Tensor | None
    """(B, T) the sampling policy's log-probs; None when every update is the first (ratio 1)."""
    ref_logp: torch.Tensor | None
    """(B, T) the reference's, for the KL loss term; None without one."""
    kl_sum: float = 0.0
    """With the KL in the reward: k1 summed over every response token (for the log)."""
    kl_tokens: float = 0.0


@torch.no_grad()
def sample_groups(cfg: Any, policy: Any, tokenizer: Any, autocast: Any, score: Scorer,
                  prompts: list[Conversation], rows: list[dict[str, Any]], share: bool = False) -> Sampled:
    """n responses per prompt in one batched generate (KV cache), scored, less the overlong penalty.
    share: each prompt prefilled once for its group (rl/shared_prompt.py)."""
    n, r = cfg.group.n, cfg.rollout
    convs = [p for p in prompts for _ in range(n)]
    with autocast():  # the training forward pass's precision (bf16), not fp32 weights
        roll = sample_rollout(policy, tokenizer, convs, r.max_new_tokens, r.temperature, r.top_p, r.top_k, share)
    total, parts = score(convs, decode_responses(tokenizer, roll), [row for row in rows for _ in range(n)])
    lengths = roll.response_mask.sum(1).cpu()
    penalty = overlong_penalty(lengths, roll.ended.cpu(), r.max_new_tokens, cfg.group.overlong_buffer, r.no_eos_penalty)
    if cfg.group.overlong_buffer or r.no_eos_penalty:
        parts["overlong_penalty"] = -penalty
    return Sampled(roll, (total.cpu() - penalty).view(-1, n), parts)


def rows_of(groups: list[int], n: int) -> torch.Tensor:
    return torch.tensor([g * n + k for g in groups for k in range(n)], dtype=torch.long)


def choose_groups(cfg: Any, reduce: Reduce, first: Sampled, more: Any, pad_id: int) -> tuple[Sampled, int]:
    """The groups to train on, and how many further batches were sampled. Without dynamic sampling,
    all of `first`. With it (DAPO, Yu et al. 2025, §3.2), groups whose rewards are all equal (every
    advantage 0) give way to informative groups of further prompts, `more(round)` sampling a batch,
    up to group.max_sampling_rounds times; a batch still short keeps some signal-free groups so its
    shape (and every process's step count) stays fixed. Every process samples the same number of
    batches, as generating is a collective under ZeRO-3."""
    want = first.rewards.shape[0]
    if not cfg.group.dynamic_sampling:
        return first, 0
    pieces = [first]
    chosen = [(0, g) for g in informative_groups(first.rewards).nonzero().flatten().tolist()]
    seen = set(first.prompt_ids)  # a prompt already in the batch does not come in twice
    rounds = 0
    while rounds < cfg.group.max_sampling_rounds:
        (short,) = reduce(float(len(chosen) < want))
        if not short:
            break
        rounds += 1
        extra = more(rounds)
        pieces.append(extra)
        for g in informative_groups(extra.rewards).nonzero().flatten().tolist():
            prompt = extra.prompt_ids[g] if extra.prompt_ids else None
            if prompt is None or prompt not in seen:
                chosen.append((rounds, g))
                seen.add(prompt)
    chosen = chosen[:want]
    informative = informative_groups(first.rewards)
    chosen += [(0, g) for g in (~informative).nonzero().flatten().tolist()][: want - len(chosen)]
    n = cfg.group.n
    by_piece = [[g for p, g in chosen if p == i] for i in range(len(pieces))]
    parts = [(pieces[i], rows_of(gs, n)) for i, gs in enumerate(by_piece) if gs]
    roll = concat_rollouts([gather(piece.roll, idx) for piece, idx in parts], pad_id)
    rewards = torch.cat([piece.rewards.flatten()[idx] for piece, idx in parts]).view(-1, n)
    names = first.parts.keys()
    return Sampled(roll, rewards, {k: torch.cat([piece.parts[k][idx] for piece, idx in parts]) for k in names}), rounds


def gather(roll: Rollout, idx: torch.Tensor) -> Rollout:
    """Rows `idx` of a rollout, every column kept (for concat_rollouts)."""
    idx = idx.to(roll.sequences.device)
    return Rollout(roll.sequences[idx], roll.attention_mask[idx], roll.prompt_width, roll.response_mask[idx],
                   roll.ended[idx])


@torch.no_grad()
def prepare_generation(cfg: Any, reduce: Reduce, autocast: Any, policy: Any, reference: Any, kept: Sampled,
                       chunk: int, share: bool = False) -> Generation:
    """Old and reference log-probs where needed, the KL in the reward where asked, and the advantages."""
    roll, mask = kept.roll, kept.roll.response_mask
    beta, kind = cfg.kl.coef, cfg.group.advantage
    in_reward = beta > 0 and (cfg.kl.mode == "reward" or kind == "reinforce_pp")
    need_old = cfg.updates_per_generation() > 1 or in_reward
    with autocast():
        old = logprobs_in_chunks(policy, roll, chunk, cfg.rollout.temperature, share) if need_old else None
        ref = None
        if beta > 0:
            model = policy if reference is None else reference
            off = policy.disable_adapter() if reference is None else nullcontext()
            with off:
                ref = logprobs_in_chunks(model, roll, chunk, cfg.rollout.temperature, share)
    scores = kept.rewards.flatten().to(mask.device)
    kl_sum = float((kl_estimate(old, ref, "k1") * mask).sum()) if in_reward else 0.0
    kl_tokens = float(mask.sum()) if in_reward else 0.0
    if kind == "reinforce_pp":
        returns = reinforce_pp_returns(scores, old if old is not None else torch.zeros_like(mask, dtype=torch.float32),
                                       ref if ref is not None else torch.zeros_like(mask, dtype=torch.float32),
                                       mask, beta, "k1")
        advantages = whiten_across(reduce, returns, mask)
    else:
        if in_reward:  # k1 summed over the response: the sequence-level KL (Ziegler et al. 2019)
            scores = scores - beta * (kl_estimate(old, ref, "k1") * mask).sum(1)
        advantages = group_advantages(scores.view(-1, cfg.group.n), kind).flatten()
    # The loss term's KL needs only the reference; in the reward it has been spent.
    return Generation(roll, advantages, old if cfg.updates_per_generation() > 1 else None,
                      ref if beta > 0 and not in_reward else None, kl_sum, kl_tokens)


def logprobs_in_chunks(model: Any, roll: Rollout, chunk: int, temperature: float, share: bool = False) -> torch.Tensor:
    """(B, T) log-probs of the sampled responses under `model`, `chunk` sequences per forward pass."""
    device = next(model.parameters()).device  # placement may keep a reference elsewhere
    width = roll.responses.shape[1]
    out = []
    for s in range(0, roll.sequences.shape[0], chunk):
        part = select(roll, slice(s, s + chunk))
        part = dataclasses.replace(part, sequences=part.sequences.to(device), attention_mask=part.attention_mask.to(device),
                                   response_mask=part.response_mask.to(device))
        logp = response_logprobs(model, part, temperature, share).to(roll.sequences.device)
        out.append(torch.nn.functional.pad(logp, (0, width - logp.shape[1])))
    return torch.cat(out)


def whiten_across(reduce: Reduce, x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the masked entries of every process (rl/advantages.whiten over the
    whole global batch): REINFORCE++ normalises over the batch, not per group."""
    m = mask.to(x.dtype)
    total, squares, count = reduce(float((x * m).sum()), float((x * x * m).sum()), float(m.sum()))
    mean = total / max(count, 1.0)
    var = max(squares - count * mean * mean, 0.0) / max(count - 1.0, 1.0)  # unbiased, as whiten's
    return (x - mean) * (var + eps) ** -0.5 * m


def take(gen: Generation, idx: torch.Tensor) -> Generation:
    """A micro-batch of a generation: its rows, without the columns padded in all of them."""
    idx = idx.to(gen.roll.sequences.device)
    roll = select(gen.roll, idx)
    w = roll.responses.shape[1]
    cut = lambda x: None if x is None else x[idx][:, :w]  # noqa: E731
    adv = gen.advantages[idx] if gen.advantages.dim() == 1 else gen.advantages[idx][:, :w]
    return Generation(roll, adv, cut(gen.old_logp), cut(gen.ref_logp))
