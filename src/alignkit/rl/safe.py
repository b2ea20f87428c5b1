"""Safe RLHF (Dai et al. 2023): maximise reward subject to expected cost <= a limit, with a Lagrange
multiplier lambda that rises while the constraint is violated and falls toward 0 while it holds.

    max_theta min_{lambda >= 0}  E[R] - lambda (E[C] - d)                       (Safe RLHF, eq. 10)

The policy is trained on the penalised reward R - lambda C (divided by 1 + lambda so its scale stays
that of R as lambda grows, as Safe RLHF's eq. 12 divides the advantages); lambda takes a projected
gradient step on the measured mean cost of each iteration's samples:

    lambda <- max(0, lambda + lr * (mean C - d))

With `learn` off, lambda stays at its start value: a fixed cost penalty, the baseline Safe RLHF
compares with. One critic fits the penalised return (Safe RLHF keeps a critic per signal; with lambda
moving slowly the combined return is what the advantages need).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

Conversation = list[dict[str, str]]
CostFn = Callable[[list[Conversation], list[str]], torch.Tensor]


def lagrange_update(lam: float, mean_cost: float, limit: float, lr: float) -> float:
    """One projected gradient-ascent step on lambda: up by lr per unit of violation, never below 0."""
    return max(0.0, lam + lr * (mean_cost - limit))


def penalized_reward(reward: torch.Tensor, cost: torch.Tensor, lam: float, normalize: bool = True) -> torch.Tensor:
    """R - lambda C, divided by 1 + lambda when `normalize`."""
    out = reward - lam * cost
    return out / (1.0 + lam) if normalize else out


@dataclass
class CostConstraint:
    """The multiplier and what the last scoring call measured (the stage reads it for its metrics)."""

    cost_fn: CostFn
    limit: float
    lam: float
    lr: float
    learn: bool = True
    normalize: bool = True
    unsafe_only: bool = False
    last_rewards: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    last_costs: torch.Tensor = field(default_factory=lambda: torch.zeros(0))

    def scorer(self, score: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        """`score` (prompts, responses, rows) -> rewards, turned into the penalised reward; the raw
        rewards and costs of the call are kept in last_rewards and last_costs."""
        def penalized(prompts: list[Conversation], responses: list[str], rows: list[dict[str, Any]]) -> torch.Tensor:
            rewards = score(prompts, responses, rows).float().cpu()
            costs = self.costs(prompts, responses)
            self.last_rewards, self.last_costs = rewards, costs
            return penalized_reward(rewards, costs, self.lam, self.normalize)
        return penalized

    def part_scorer(self, score: Callable[..., Any]) -> Callable[..., Any]:
        """A (total, parts) scorer (rl/scoring.py) turned into the penalised total, the cost added to
        its parts as "cost"."""
        def penalized(prompts: list[Conversation], responses: list[str], rows: list[dict[str, Any]]) -> Any:
            total, parts = score(prompts, responses, rows)
            costs = self.costs(prompts, responses)
            self.last_rewards, self.last_costs = total.float().cpu(), costs
            return penalized_reward(total.float().cpu(), costs, self.lam, self.normalize), {**parts, "cost": costs}
        return penalized

    def costs(self, prompts: list[Conversation], responses: list[str]) -> torch.Tensor:
        """The cost of each response; with unsafe_only, max(C, 0): only what the cost model calls unsafe."""
        costs = self.cost_fn(prompts, responses).float().cpu()
        return costs.clamp(min=0.0) if self.unsafe_only else costs

    def update(self, mean_cost: float) -> None:
        """After an iteration: the multiplier's step on that iteration's mean cost (fixed: no change)."""
        if self.learn:
            self.lam = lagrange_update(self.lam, mean_cost, self.limit, self.lr)
