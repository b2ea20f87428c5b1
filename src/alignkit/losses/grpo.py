"""The policy loss of the critic-free methods: PPO's clipped surrogate with separate lower and upper
bounds (DAPO's clip-higher, Yu et al. 2025: a wider upper bound lets unlikely tokens with a positive
advantage grow, against entropy collapse), and the ways to average it over tokens."""

from __future__ import annotations

import torch

from alignkit.rl.advantages import masked_mean

AGGREGATIONS = ("sequence_mean", "token_mean", "constant")


def clipped_surrogate(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                      clip_low: float = 0.2, clip_high: float = 0.2) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high)), r = exp(logp - old_logp); all
    (B, T), advantages may be (B, T) or one per sequence (B,). Stats: the share of response tokens
    where the lower bound acted (A < 0, r below it) and where the upper bound did (A > 0, r above)."""
    if advantages.dim() == 1:
        advantages = advantages[:, None].expand_as(logp)
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    with torch.no_grad():
        took_clipped = clipped > unclipped
        stats = {"clip_low_fraction": masked_mean((took_clipped & (advantages < 0)).float(), mask),
                 "clip_high_fraction": masked_mean((took_clipped & (advantages > 0)).float(), mask)}
    return torch.maximum(unclipped, clipped), stats


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, how: str, constant: float = 0.0) -> torch.Tensor:
    """One loss from (B, T) per-token losses:
    sequence_mean  each response's token mean, then the mean over responses (GRPO as published:
                   a long response's tokens weigh less);
    token_mean     the mean over every response token of the batch (DAPO);
    constant       the sum over tokens divided by B x `constant` (Dr. GRPO: the maximum response
                   length; no length bias in either direction)."""
    m = mask.to(per_token.dtype)
    if how == "sequence_mean":
        return masked_mean(per_token, mask, dim=1).mean()
    if how == "token_mean":
        return (per_token * m).sum() / m.sum().clamp(min=1)
    if how == "constant":
        if constant <= 0:
            raise ValueError("aggregation 'constant' needs a positive constant (the maximum response length)")
        return (per_token * m).sum() / (per_token.shape[0] * constant)
    raise ValueError(f"unknown loss aggregation '{how}'; expected one of {', '.join(AGGREGATIONS)}")


def loss_sum(per_token: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """The numerator of `aggregate` for one micro-batch, so micro-batches and processes add up to the
    whole batch's loss once divided by `loss_denominator` of the whole batch: each response's token
    mean summed (sequence_mean), or every token's loss summed (token_mean, constant)."""
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown loss aggregation '{how}'; expected one of {', '.join(AGGREGATIONS)}")
    if how == "sequence_mean":
        return masked_mean(per_token, mask, dim=1).sum()
    return (per_token * mask.to(per_token.dtype)).sum()


def loss_denominator(how: str, responses: float, tokens: float, max_len: int) -> float:
    """What the whole batch's `loss_sum` is divided by: its responses (sequence_mean), its response
    tokens (token_mean), or responses x the maximum length (constant)."""
    if how == "sequence_mean":
        return responses
    if how == "token_mean":
        return max(tokens, 1.0)
    if how == "constant":
        return responses * max_len
    raise ValueError(f"unknown loss aggregation '{how}'; expected one of {', '.join(AGGREGATIONS)}")
