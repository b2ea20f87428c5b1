"""Reward-model ranking loss (Bradley-Terry), as in InstructGPT (Ouyang et al. 2022, eq. 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_ranking_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: torch.Tensor | float | None = None,
                          center_coef: float = 0.0) -> torch.Tensor:
    """Per-pair loss  -log sigmoid(r_chosen - r_rejected - margin)  +  center_coef * (r_chosen + r_rejected)^2.

    r_chosen, r_rejected: (P,) scalar rewards of the preferred and the other response of each pair.
    margin: (P,) or scalar, e.g. from a rating gap (Llama 2, Touvron et al. 2023, eq. 2); None is 0.
    center_coef: keeps rewards centred on 0, since the loss only sees differences (Eisenstein et al.
    2023, "Helping or Herding?"); 0 disables it. Returns (P,).
    """
    diff = r_chosen - r_rejected
    if margin is not None:
        diff = diff - margin
    loss = -F.logsigmoid(diff)
    if center_coef:
        loss = loss + center_coef * (r_chosen + r_rejected) ** 2
    return loss


def pairwise_accuracy(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """(P,) 1.0 where the chosen response scores strictly higher, 0.5 on an exact tie, else 0."""
    return (r_chosen > r_rejected).float() + 0.5 * (r_chosen == r_rejected).float()
