"""PPO's clipped losses (Schulman et al. 2017, eq. 7) over response tokens, per sequence."""

from __future__ import annotations

import torch

from alignkit.rl.advantages import masked_mean


def ppo_policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                    clip: float = 0.2) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-sequence loss mean_t max(-A ratio, -A clip(ratio, 1 - e, 1 + e)), ratio = exp(logp - old_logp).

    Returns (loss (B,), stats): clip_fraction (share of tokens where the clipped term was taken) and
    approx_kl (mean of (ratio - 1) - log ratio, the k3 estimate of KL(old || new)).
    """
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    per_token = torch.maximum(unclipped, clipped)
    with torch.no_grad():
        stats = {"clip_fraction": masked_mean((clipped > unclipped).float(), mask),
                 "approx_kl": masked_mean(torch.expm1(log_ratio) - log_ratio, mask)}
    return masked_mean(per_token, mask, dim=1), stats


def ppo_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                   clip: float = 0.2) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-sequence 0.5 * mean_t max((V - R)^2, (V_clipped - R)^2), V_clipped = V_old + clip(V - V_old, +-e)."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    per_token = 0.5 * torch.maximum((values - returns) ** 2, (clipped_values - returns) ** 2)
    with torch.no_grad():
        stats = {"value_clip_fraction": masked_mean(((clipped_values - returns) ** 2 > (values - returns) ** 2).float(), mask)}
    return masked_mean(per_token, mask, dim=1), stats


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-token entropy of the categorical distribution of each position: (B, T, V) -> (B, T)."""
    return entropy_from_logprobs(torch.log_softmax(logits.float(), dim=-1))


def entropy_from_logprobs(logp: torch.Tensor) -> torch.Tensor:
    """The same from log-probs already computed: (B, T, V) -> (B, T)."""
    return -(logp.exp() * logp).sum(-1)
