"""Critic-free RL math against hand-derived values: the group advantage estimators, REINFORCE++'s
batch-whitened returns, the dynamic-sampling filter, clip-higher and the loss aggregations."""

from __future__ import annotations

import math

import pytest
import torch

from alignkit.losses.grpo import aggregate, clipped_surrogate
from alignkit.rl.group import group_advantages, informative_groups, reinforce_pp_advantages


def test_group_advantages_of_a_group_of_four():
    """Rewards (1, 2, 3, 6): mean 3, deviations (-2, -1, 0, 3), unbiased variance (4 + 1 + 0 + 9) / 3
    = 14/3, std 2.160247.
    grpo:    deviation / (std + 1e-4)  = (-0.925777, -0.462889, 0, 1.388666)
    dr_grpo: deviation                 = (-2, -1, 0, 3)
    rloo:    r - mean of the other 3   = (1 - 11/3, 2 - 10/3, 3 - 9/3, 6 - 6/3) = (-8/3, -4/3, 0, 4)."""
    r = torch.tensor([[1.0, 2.0, 3.0, 6.0]], dtype=torch.float64)
    std = math.sqrt(14 / 3) + 1e-4
    assert group_advantages(r, "grpo")[0].tolist() == pytest.approx([-2 / std, -1 / std, 0.0, 3 / std])
    assert group_advantages(r, "dr_grpo")[0].tolist() == pytest.approx([-2.0, -1.0, 0.0, 3.0])
    assert group_advantages(r, "rloo")[0].tolist() == pytest.approx([-8 / 3, -4 / 3, 0.0, 4.0])


def test_groups_are_independent_and_an_equal_group_has_no_signal():
    """Two groups at once give each its own values; (2, 2, 2, 2) gives 0 everywhere (not NaN) and is
    the one the dynamic-sampling filter drops."""
    r = torch.tensor([[1.0, 2.0, 3.0, 6.0], [2.0, 2.0, 2.0, 2.0], [0.0, 0.0, 0.0, 1.0]])
    for kind in ("grpo", "dr_grpo", "rloo"):
        both = group_advantages(r, kind)
        assert torch.allclose(both[0], group_advantages(r[:1], kind)[0])
        assert both[1].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert informative_groups(r).tolist() == [True, False, True]
    with pytest.raises(ValueError, match="unknown group advantage 'ppo'"):
        group_advantages(r, "ppo")


def test_reinforce_pp_whitens_kl_penalised_returns_over_the_batch():
    """Scores (1, -1), two tokens each, beta 0.1, logp - ref = (0.5, 0) and (0, 0):
    rewards (-0.05, 1) and (0, -1); returns (reverse cumulative sums) (0.95, 1) and (-1, -1);
    mean -0.0125, deviations (0.9625, 1.0125, -0.9875, -0.9875), unbiased variance 3.901875 / 3 =
    1.300625, std 1.140449 -> (0.843966, 0.887808, -0.865887, -0.865887)."""
    logp = torch.tensor([[-1.0, -2.0], [-1.0, -1.0]])
    ref = torch.tensor([[-1.5, -2.0], [-1.0, -1.0]])
    adv = reinforce_pp_advantages(torch.tensor([1.0, -1.0]), logp, ref, torch.ones(2, 2), 0.1)
    assert adv.flatten().tolist() == pytest.approx([0.843966, 0.887808, -0.865887, -0.865887], abs=1e-5)


def test_clip_higher_at_inside_and_beyond_both_bounds():
    """clip_low 0.2, clip_high 0.28 (bounds 0.8 and 1.28); per token max(-A r, -A clip(r)):
    A=+1 r=1.1  inside              -> -1.1
    A=+1 r=1.5  beyond the upper    -> max(-1.5, -1.28) = -1.28   (upper bound acted)
    A=+1 r=1.28 at the upper        -> -1.28 (both terms equal: not counted as clipped)
    A=-1 r=0.5  beyond the lower    -> max(0.5, 0.8) = 0.8        (lower bound acted)
    A=-1 r=0.9  inside              -> 0.9
    A=+1 r=0.5  below, but A > 0    -> max(-0.5, -0.8) = -0.5     (no clip: the ratio may recover)
    A=-1 r=1.5  above, but A < 0    -> max(1.5, 1.28) = 1.5       (no clip)
    Clip fractions: low 1/7, high 1/7."""
    ratio = torch.tensor([[1.1, 1.5, 1.28, 0.5, 0.9, 0.5, 1.5]], dtype=torch.float64)
    adv = torch.tensor([[1.0, 1.0, 1.0, -1.0, -1.0, 1.0, -1.0]], dtype=torch.float64)
    old = torch.full_like(ratio, -2.0)
    per_token, stats = clipped_surrogate(old + ratio.log(), old, adv, torch.ones_like(ratio), 0.2, 0.28)
    assert per_token[0].tolist() == pytest.approx([-1.1, -1.28, -1.28, 0.8, 0.9, -0.5, 1.5])
    assert stats["clip_low_fraction"].item() == pytest.approx(1 / 7)
    assert stats["clip_high_fraction"].item() == pytest.approx(1 / 7)
    # One advantage per sequence broadcasts over its tokens.
    seq, _ = clipped_surrogate(old[:, :2] + ratio[:, :2].log(), old[:, :2], torch.tensor([1.0], dtype=torch.float64),
                               torch.ones(1, 2), 0.2, 0.28)
    assert seq[0].tolist() == pytest.approx([-1.1, -1.28])


def test_loss_aggregations():
    """Losses (1, 2, 3 | pad) and (4 | pad, pad, pad):
    sequence_mean: (mean(1, 2, 3) + 4) / 2 = (2 + 4) / 2 = 3
    token_mean:    (1 + 2 + 3 + 4) / 4 = 2.5
    constant 4:    (6 + 4) / (2 x 4) = 1.25."""
    x = torch.tensor([[1.0, 2.0, 3.0, 9.0], [4.0, 9.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    assert aggregate(x, mask, "sequence_mean").item() == pytest.approx(3.0)
    assert aggregate(x, mask, "token_mean").item() == pytest.approx(2.5)
    assert aggregate(x, mask, "constant", constant=4).item() == pytest.approx(1.25)
    with pytest.raises(ValueError, match="needs a positive constant"):
        aggregate(x, mask, "constant")
