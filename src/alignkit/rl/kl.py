"""The KL penalty that keeps the policy near the reference, and its coefficient controllers."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from sampled tokens' log-probs (Schulman 2020,
    "Approximating KL divergence"): k1 = logp - ref_logp (unbiased, can be negative);
    k3 = (r - 1) - log r with r = exp(ref_logp - logp) (unbiased, never negative)."""
    if kind == "k1":
        return logp - ref_logp
    if kind == "k3":
        log_ratio = ref_logp - logp
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"unknown KL estimator '{kind}'; expected k1 or k3")


def kl_penalized_rewards(scores: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor,
                         kl_coef: float, kind: str = "k1") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards -kl_coef * KL_t on every response token, plus the sequence's score at its
    last response token (Ziegler et al. 2019, eq. 2; Stiennon et al. 2020). scores: (B,); the
    others (B, T). Returns (rewards, kl), both 0 where mask is 0."""
    m = mask.to(logp.dtype)
    kl = kl_estimate(logp, ref_logp, kind) * m
    rewards = -kl_coef * kl
    last = (torch.arange(mask.shape[1], device=mask.device) * mask.long()).argmax(dim=1)
    rewards[torch.arange(mask.shape[0], device=mask.device), last] += scores.to(rewards.dtype)
    return rewards * m, kl


@dataclass
class FixedKLController:
    value: float

    def update(self, current_kl: float, n_steps: int) -> None:
        return None


@dataclass
class AdaptiveKLController:
    """Ziegler et al. 2019, §2.2: e = clip(KL / target - 1, -0.2, 0.2); beta *= 1 + e * n / horizon,
    so the coefficient rises when the policy drifts past the target KL and falls below it."""

    value: float
    target: float
    horizon: int

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
