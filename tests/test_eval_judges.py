"""Pairwise judging with position swap: position bias gives ties, real preferences give wins."""

from __future__ import annotations

import math

import pytest

from alignkit.eval.judges import judge_pair, reward_model_judge, win_rate_summary


def test_a_judge_that_always_prefers_the_first_position_gives_ties():
    always_first = lambda prompt, first, second: True  # noqa: E731
    always_second = lambda prompt, first, second: False  # noqa: E731
    assert judge_pair(always_first, "q", "x", "y") == "tie"
    assert judge_pair(always_second, "q", "x", "y") == "tie"


def test_a_consistent_judge_decides():
    longer = lambda prompt, first, second: len(first) > len(second)  # noqa: E731
    assert judge_pair(longer, "q", "long answer", "short") == "a"
    assert judge_pair(longer, "q", "short", "long answer") == "b"
    assert judge_pair(longer, "q", "same", "same") == "tie"


def test_win_rate_summary_counts_and_interval():
    """3 wins, 1 loss, 1 tie: 75% of the 4 decided, ties 20%; the Wilson interval holds 0.75."""
    s = win_rate_summary(["a", "a", "b", "tie", "a"])
    assert (s["wins"], s["losses"], s["ties"], s["n"]) == (3, 1, 1, 5)
    assert s["win_rate"] == 0.75 and s["tie_rate"] == pytest.approx(0.2)
    lo, hi = s["win_rate_ci95"]
    assert lo < 0.75 < hi
    assert math.isnan(win_rate_summary(["tie"])["win_rate"])


def test_reward_model_judge_prefers_the_higher_score():
    judge = reward_model_judge(lambda prompts, responses: [float(len(r)) for r in responses])
    assert judge_pair(judge, "q", "abc", "a") == "a" and judge_pair(judge, "q", "ab", "ab") == "tie"
