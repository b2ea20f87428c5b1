"""Pairwise judging with both orders asked, so a judge's taste for a position cancels out.

A judge is any function (prompt, first, second) -> True when it prefers the response shown first.
Each pair is asked twice, A then B and B then A: a response wins only when it is preferred in both
orders; a judge that always picks the first (or always the second) position yields ties, never a
spurious win (Zheng et al. 2023, "Judging LLM-as-a-judge", position bias and the swap).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Judge = Callable[[Any, str, str], bool]


def judge_pair(judge: Judge, prompt: Any, a: str, b: str) -> str:
    """'a', 'b' or 'tie' for one prompt."""
    a_first = judge(prompt, a, b)
    b_first = judge(prompt, b, a)
    if a_first and not b_first:
        return "a"
    if b_first and not a_first:
        return "b"
    return "tie"


def win_rate_summary(outcomes: Sequence[str]) -> dict[str, Any]:
    """Wins, losses and ties of A; the win rate over decided prompts with its 95% Wilson interval, and
    the tie rate beside it."""
    from alignkit.world.oracle import wilson_interval

    wins, losses = outcomes.count("a"), outcomes.count("b")
    ties, decided = len(outcomes) - wins - losses, wins + losses
    return {"wins": wins, "losses": losses, "ties": ties, "n": len(outcomes),
            "win_rate": wins / decided if decided else float("nan"), "win_rate_ci95": wilson_interval(wins, decided),
            "tie_rate": ties / len(outcomes) if outcomes else float("nan")}


def reward_model_judge(score: Callable[[list, list[str]], Sequence[float]]) -> Judge:
    """A judge from a scorer of (prompts, responses): prefers the first when it scores strictly higher
    (a reward model has no position, so both orders agree; equal scores are a tie)."""
    def judge(prompt: Any, first: str, second: str) -> bool:
        s = score([prompt, prompt], [first, second])
        return float(s[0]) > float(s[1])
    return judge
