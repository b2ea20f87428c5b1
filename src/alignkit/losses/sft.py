"""Causal-LM loss on labelled tokens only."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def token_nll(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token negative log-likelihood of next-token prediction, and its mask.

    logits: (B, T, V); labels: (B, T) with `ignore_index` where no loss applies. Position t predicts
    labels[t + 1], so the outputs are (B, T - 1): nll[b, t] = -log p(labels[b, t+1] | tokens <= t),
    zero where masked.
    """
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    mask = shift_labels != ignore_index
    nll = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.reshape(-1).clamp(min=0),  # masked positions are zeroed below
        reduction="none",
    ).view_as(shift_labels)
    return nll * mask, mask


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example summed NLL over labelled tokens, and per-example labelled-token counts: (B,), (B,).

    Summed, not averaged, so callers can normalise by the token count of a whole accumulated batch:
    that makes batch 8 x accumulation 1 and batch 2 x accumulation 4 give the same gradient.
    """
    nll, mask = token_nll(logits, labels, ignore_index)
    return nll.sum(dim=1), mask.sum(dim=1)


def masked_mean_nll(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean NLL over all labelled tokens of the batch (the usual SFT loss)."""
    total, count = sequence_nll(logits, labels, ignore_index)
    return total.sum() / count.sum().clamp(min=1)
