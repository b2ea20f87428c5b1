"""Masked causal-LM loss against values derived by hand."""

from __future__ import annotations

import math

import pytest
import torch

from alignkit.losses import masked_mean_nll, sequence_nll, token_nll


def test_uniform_logits_give_log_vocab():
    """Uniform logits over V=5: every labelled token costs ln 5; the first position has no target."""
    logits = torch.zeros(1, 4, 5)
    labels = torch.tensor([[-100, 1, 2, -100]])
    nll, mask = token_nll(logits, labels)
    assert mask.tolist() == [[True, True, False]]
    assert torch.allclose(nll, torch.tensor([[math.log(5), math.log(5), 0.0]]))
    total, count = sequence_nll(logits, labels)
    assert count.tolist() == [2] and math.isclose(total.item(), 2 * math.log(5), rel_tol=1e-6)


def test_hand_computed_two_token_example():
    """Logits at t=0 are [ln 1, ln 3] -> p(1) = 3/4; at t=1 [0, 0] -> p(0) = 1/2.
    Labels [_, 1, 0]: nll = -ln(3/4) - ln(1/2) = 0.28768 + 0.69315; mean over 2 tokens = 0.49041."""
    logits = torch.tensor([[[0.0, math.log(3)], [0.0, 0.0], [5.0, -5.0]]])
    labels = torch.tensor([[-100, 1, 0]])
    assert math.isclose(masked_mean_nll(logits, labels).item(), (-math.log(0.75) - math.log(0.5)) / 2, rel_tol=1e-6)


def test_mean_weights_tokens_not_examples():
    """Example A has 1 labelled token with nll ln 2, B has 3 with nll 0 (almost): the mean is ln2 / 4."""
    logits = torch.zeros(2, 4, 2)
    logits[1, :, 0] = 100.0  # B predicts token 0 with certainty
    labels = torch.tensor([[-100, 1, -100, -100], [-100, 0, 0, 0]])
    assert math.isclose(masked_mean_nll(logits, labels).item(), math.log(2) / 4, rel_tol=1e-5)


def test_matches_plain_loop_on_random_data():
    torch.manual_seed(0)
    logits = torch.randn(3, 6, 11)
    labels = torch.randint(0, 11, (3, 6))
    labels[torch.rand(3, 6) < 0.4] = -100
    total = count = 0.0
    for b in range(3):
        for t in range(5):
            if labels[b, t + 1] != -100:
                total += -torch.log_softmax(logits[b, t], -1)[labels[b, t + 1]].item()
                count += 1
    assert math.isclose(masked_mean_nll(logits, labels).item(), total / count, rel_tol=1e-5)


def test_pairwise_ranking_loss_hand_values():
    """-log sigmoid(d): d = 0 -> ln 2 = 0.693147; d = 1 -> ln(1 + e^-1) = 0.313262;
    d = 2 -> ln(1 + e^-2) = 0.126928; d = -1 -> ln(1 + e) = 1.313262."""
    from alignkit.losses import pairwise_ranking_loss

    chosen = torch.tensor([0.0, 1.0, 3.0, 0.0])
    rejected = torch.tensor([0.0, 0.0, 1.0, 1.0])
    expected = torch.tensor([0.693147, 0.313262, 0.126928, 1.313262])
    assert torch.allclose(pairwise_ranking_loss(chosen, rejected), expected, atol=1e-6)


def test_pairwise_ranking_loss_margin_and_centering():
    """A margin of 1 on a gap of 2 leaves d = 1 -> 0.313262. Centering adds c (r_c + r_r)^2:
    r = (3, 1), c = 0.01 -> 0.126928 + 0.01 * 16 = 0.286928."""
    from alignkit.losses import pairwise_accuracy, pairwise_ranking_loss

    r_c, r_r = torch.tensor([3.0]), torch.tensor([1.0])
    assert pairwise_ranking_loss(r_c, r_r, margin=torch.tensor([1.0])).item() == pytest.approx(0.313262, abs=1e-6)
    assert pairwise_ranking_loss(r_c, r_r, center_coef=0.01).item() == pytest.approx(0.286928, abs=1e-6)
    assert pairwise_accuracy(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 1.0, 2.0])).tolist() == [1.0, 0.0, 0.5]
