"""Rewards from anywhere, for every stage that samples (GRPO, PPO, best-of-n): a reward model (frozen,
its offset subtracted) and/or reward functions (rl/reward_functions.py), added by weight into one
scorer (prompts, responses, prompt rows) -> (rewards (N,), each part's own values by name)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from alignkit.errors import ConfigError
from alignkit.rl.reward_functions import combined_reward

Conversation = list[dict[str, str]]
RewardFn = Callable[[list[Conversation], list[str]], torch.Tensor]
Scorer = Callable[[list[Conversation], list[str], list[dict[str, Any]]], tuple[torch.Tensor, dict[str, torch.Tensor]]]
MODEL_PART = "reward_model"
RESERVED = (MODEL_PART, "overlong_penalty")  # parts the stages log under these names


def reward_model_scorer(reward: Any, tokenizer: Any, offset: float, batch_size: int) -> RewardFn:
    """Scores from a reward model (its own tokenizer and chat template), its offset subtracted."""
    from alignkit.models.reward import score_conversations

    def score(prompts: list[Conversation], responses: list[str]) -> torch.Tensor:
        return score_conversations(reward, tokenizer, prompts, responses, batch_size=batch_size) - offset
    return score


def combined_scorer(rewards: list[dict[str, Any]], model_score: RewardFn | None = None,
                    model_weight: float = 1.0) -> Scorer:
    """The weighted sum of the reward functions' values and the reward model's score (either may be
    absent), with each part's values kept for the log (the reward model's as "reward_model")."""
    taken = [str(spec.get("name", spec.get("fn"))) for spec in rewards if isinstance(spec, dict)]
    clash = [n for n in taken if n in RESERVED]
    if clash:
        raise ConfigError(f"rewards: a function named '{clash[0]}' would be logged as the stage's own "
                          f"{clash[0]}; give it another 'name'")
    functions = combined_reward(rewards) if rewards else None
    if functions is None and model_score is None:
        raise ValueError("a scorer needs reward functions or a reward model")

    def score(prompts: list[Conversation], responses: list[str], rows: list[dict[str, Any]]
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total = torch.zeros(len(responses), dtype=torch.float64)
        parts: dict[str, torch.Tensor] = {}
        if functions is not None:
            total, parts = functions(prompts, responses, rows)
        if model_score is not None:
            parts[MODEL_PART] = model_score(prompts, responses).detach().double().cpu()
            total = total + model_weight * parts[MODEL_PART]
        return total.float(), {k: v.float() for k, v in parts.items()}

    return score
