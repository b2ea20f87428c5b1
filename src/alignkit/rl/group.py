"""Critic-free advantages: each prompt's n sampled responses form a group, and a response's
advantage comes from how its reward compares with the group's, with no value model.

    grpo          (r - group mean) / (group std + eps)          Shao et al. 2024 (DeepSeekMath)
    dr_grpo       r - group mean                                Liu et al. 2025 ("Understanding
                                                                R1-Zero-like training"): the std
                                                                division biases towards easy and
                                                                hard prompts
    rloo          r - mean of the other n - 1                   Ahmadian et al. 2024 (RLOO)

REINFORCE++ (Hu 2025) instead puts the KL penalty into per-token rewards and whitens the returns over
the whole batch (`reinforce_pp_advantages`). Groups whose rewards are all equal carry no signal
(every advantage 0): DAPO (Yu et al. 2025) drops them and samples more (`informative_groups`).
"""

from __future__ import annotations

import torch

from alignkit.rl.advantages import whiten
from alignkit.rl.kl import kl_penalized_rewards

GROUP_ADVANTAGES = ("grpo", "dr_grpo", "rloo")


def group_advantages(rewards: torch.Tensor, kind: str, eps: float = 1e-4) -> torch.Tensor:
    """(P, n) rewards of P groups of n responses -> (P, n) advantages, one per response. The std is
    the group's unbiased one (TRL's and the paper's), eps keeps an all-equal group at 0."""
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be (groups, n >= 2), got {tuple(rewards.shape)}")
    mean = rewards.mean(dim=1, keepdim=True)
    if kind == "grpo":
        return (rewards - mean) / (rewards.std(dim=1, keepdim=True) + eps)
    if kind == "dr_grpo":
        return rewards - mean
    if kind == "rloo":
        n = rewards.shape[1]
        return (rewards * n - rewards.sum(dim=1, keepdim=True)) / (n - 1)
    raise ValueError(f"unknown group advantage '{kind}'; expected one of {', '.join(GROUP_ADVANTAGES)}")


def informative_groups(rewards: torch.Tensor) -> torch.Tensor:
    """(P,) True for the groups whose rewards are not all equal: the others have every advantage 0
    under any of the group estimators and only cost compute (DAPO's dynamic sampling filter)."""
    return rewards.max(dim=1).values > rewards.min(dim=1).values


def reinforce_pp_returns(scores: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor,
                         kl_coef: float, kind: str = "k1") -> torch.Tensor:
    """REINFORCE++'s returns: per-token rewards -kl_coef KL_t plus the score at the last token, and
    G_t = sum_{s >= t} r_s (no discount, no critic). scores (B,), the others (B, T); 0 where mask is 0."""
    rewards, _ = kl_penalized_rewards(scores, logp, ref_logp, mask, kl_coef, kind)
    return rewards.flip(1).cumsum(1).flip(1) * mask.to(rewards.dtype)


def reinforce_pp_advantages(scores: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor,
                            kl_coef: float, kind: str = "k1") -> torch.Tensor:
    """REINFORCE++: the returns whitened over every response token of the batch (one process's; the
    stage whitens over all processes' tokens with the same formula)."""
    return whiten(reinforce_pp_returns(scores, logp, ref_logp, mask, kl_coef, kind), mask)


def overlong_penalty(lengths: torch.Tensor, ended: torch.Tensor, max_len: int, buffer: int,
                     penalty: float) -> torch.Tensor:
    """(B,) what to subtract from each response's reward for its length. A response that never ended
    (it hit max_len without EOS) loses `penalty`; with buffer > 0 (DAPO's soft overlong punishment,
    Yu et al. 2025, eq. 13) one longer than max_len - buffer also loses penalty x (length - (max_len
    - buffer)) / buffer, reaching the full penalty at max_len."""
    out = penalty * (~ended.bool()).to(torch.float32)
    if buffer > 0:
        ramp = ((lengths.float() - (max_len - buffer)) / buffer).clamp(0.0, 1.0)
        out = torch.maximum(out, penalty * ramp)
    return out
