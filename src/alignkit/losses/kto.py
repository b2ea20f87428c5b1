"""KTO (Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization"): a loss for
unpaired feedback, one response at a time labelled desirable or undesirable.

Per response, r = log pi(y|x) - log pi_ref(y|x) (summed log-probs). The reference point z0 is the
policy's KL from the reference, estimated on mismatched (prompt, completion) pairs of the batch,
clamped at 0 and not differentiated (eq. 7-8; TRL's estimator). The value (eq. 6):
  desirable:    lambda_D x (1 - sigmoid(beta (r - z0)))
  undesirable:  lambda_U x (1 - sigmoid(beta (z0 - r)))
so a desirable response gains by rising above the reference point and an undesirable one by
falling below it. At the start (policy = reference, z0 = 0) every loss is lambda / 2.
"""

from __future__ import annotations

import torch


def kto_reference_point(logp_mismatched: torch.Tensor, ref_mismatched: torch.Tensor) -> torch.Tensor:
    """z0 = max(0, mean(log pi(y'|x) - log pi_ref(y'|x))) over mismatched pairs, detached."""
    return (logp_mismatched - ref_mismatched).mean().clamp(min=0).detach()


def kto_loss(logp: torch.Tensor, ref_logp: torch.Tensor, desirable: torch.Tensor, z0: torch.Tensor, beta: float,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> torch.Tensor:
    """(B,) KTO losses; desirable (B,) bool; z0 a scalar (kto_reference_point)."""
    r = logp - ref_logp
    good = desirable_weight * (1.0 - torch.sigmoid(beta * (r - z0)))
    bad = undesirable_weight * (1.0 - torch.sigmoid(beta * (z0 - r)))
    return torch.where(desirable, good, bad)
