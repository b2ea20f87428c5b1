"""Rewards from several scorers: an ensemble of reward models with an uncertainty penalty.

A single learned reward model is confidently wrong where its data was thin, and PPO finds exactly
those places (reward over-optimisation). An ensemble's members disagree there, so optimising the
mean minus a multiple of their spread steers the policy away from what the reward model cannot
judge (Coste et al. 2024, "Reward Model Ensembles Help Mitigate Overoptimization", uncertainty-
weighted optimisation; Eisenstein et al. 2023, "Helping or Herding?"). The spread is the standard
deviation rather than the variance so that `coef` is in reward units.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

Scorer = Callable[[list[Any], list[str]], torch.Tensor]
"""(prompts, responses) -> (N,) rewards."""


def uncertainty_penalized(scores: torch.Tensor, coef: float) -> torch.Tensor:
    """(K, N) rewards of K models for N responses -> (N,) mean over the models minus coef x their
    standard deviation (the population's: K = 1 has no spread and gives the single model's reward)."""
    if scores.dim() != 2:
        raise ValueError(f"expected (models, responses) scores, got shape {tuple(scores.shape)}")
    return scores.mean(dim=0) - coef * scores.std(dim=0, unbiased=False)


def ensemble_scorer(scorers: Sequence[Scorer], coef: float) -> Scorer:
    """One scorer from several: each scores every response, then uncertainty_penalized."""
    def score(prompts: list[Any], responses: list[str]) -> torch.Tensor:
        return uncertainty_penalized(torch.stack([s(prompts, responses).float().cpu() for s in scorers]), coef)
    return score
