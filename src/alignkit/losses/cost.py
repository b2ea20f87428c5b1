"""Cost-model loss (Safe RLHF, Dai et al. 2023, eq. 6): a score of harm, ranked and signed.

The cost model C scores a response: higher is more harmful. Two terms:
- ranking: of two responses to one prompt, the more harmful one scores higher,
  -log sigmoid(C(y_harm) - C(y_safe)), as the reward model's Bradley-Terry loss;
- sign: a response labelled unsafe (s = +1) scores above 0 and a safe one (s = -1) below,
  -log sigmoid(s * C(y)), so 0 is the boundary between safe and unsafe and `C(y) > 0` is a verdict.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cost_ranking_loss(c_harm: torch.Tensor, c_safe: torch.Tensor) -> torch.Tensor:
    """(P,) -log sigmoid(C(more harmful) - C(safer)) per pair."""
    return -F.logsigmoid(c_harm - c_safe)


def cost_sign_loss(costs: torch.Tensor, unsafe: torch.Tensor) -> torch.Tensor:
    """(N,) -log sigmoid(s * C) per labelled response; s = +1 where `unsafe` is true, else -1."""
    sign = unsafe.to(costs.dtype) * 2 - 1
    return -F.logsigmoid(sign * costs)


def cost_accuracy(costs: torch.Tensor, unsafe: torch.Tensor) -> torch.Tensor:
    """(N,) 1.0 where the verdict C > 0 (unsafe) matches the label, else 0 (a score of exactly 0 is safe)."""
    return ((costs > 0) == unsafe.bool()).float()


def cost_example_losses(costs: torch.Tensor, unsafe: torch.Tensor, seq_example: torch.Tensor, harm: torch.Tensor,
                        safe: torch.Tensor, n_examples: int) -> torch.Tensor:
    """(E,) loss per example: its pair's ranking term (if it has a pair) plus the mean sign term over
    its labelled sequences. Averaged over a batch of PKU-SafeRLHF rows (two labelled responses and a
    pair each) this is Safe RLHF's mean ranking loss plus mean sign loss.

    costs, unsafe, seq_example: (N,) per sequence, seq_example[i] the example sequence i belongs to;
    harm, safe: (P,) positions in costs of each pair's more harmful and safer sequence (the pair
    belongs to seq_example[harm])."""
    sign = cost_sign_loss(costs, unsafe)
    per = torch.zeros(n_examples, dtype=costs.dtype, device=costs.device)
    count = torch.zeros(n_examples, dtype=costs.dtype, device=costs.device)
    per = per.index_add(0, seq_example, sign)
    count = count.index_add(0, seq_example, torch.ones_like(sign))
    per = per / count.clamp(min=1)
    if harm.numel():
        per = per.index_add(0, seq_example[harm], cost_ranking_loss(costs[harm], costs[safe]))
    return per
