"""DPO-family losses against values derived by hand."""

from __future__ import annotations

import math

import pytest
import torch

from alignkit.losses.dpo import (PREFERENCE_LOSSES, dpo_loss, hinge_loss, implicit_rewards, ipo_loss, log_odds,
                                 orpo_odds_ratio_loss, preference_loss, simpo_loss)


def t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


def test_dpo_sigmoid_values():
    """beta 0.1, gaps 0, 10, 20: -log sigmoid(0, 1, 2) = ln 2, ln(1 + e^-1), ln(1 + e^-2)
    = 0.693147, 0.313262, 0.126928."""
    assert dpo_loss(t(0, 10, 20), 0.1).tolist() == pytest.approx([0.693147, 0.313262, 0.126928], abs=1e-6)


def test_conservative_dpo_values():
    """e = 0.1. Gap 0: both terms are ln 2, so ln 2. beta 0.5, gap 2 (z = 1):
    0.9 x ln(1 + e^-1) + 0.1 x ln(1 + e) = 0.9 x 0.313262 + 0.1 x 1.313262 = 0.413262.
    e = 0 is plain DPO."""
    assert dpo_loss(t(0), 1.0, 0.1).item() == pytest.approx(math.log(2))
    assert dpo_loss(t(2), 0.5, 0.1).item() == pytest.approx(0.413262, abs=1e-6)
    assert dpo_loss(t(2), 0.5, 0.0).item() == pytest.approx(0.313262, abs=1e-6)


def test_ipo_values():
    """beta (tau) 0.1: the target gap is 1 / 0.2 = 5. Gaps 5, 0, 7 -> 0, 25, 4."""
    assert ipo_loss(t(5, 0, 7), 0.1).tolist() == pytest.approx([0.0, 25.0, 4.0])


def test_hinge_values():
    """beta 0.1: max(0, 1 - 0.1 h) for h = 0, 5, 10, 20 -> 1, 0.5, 0, 0."""
    assert hinge_loss(t(0, 5, 10, 20), 0.1).tolist() == pytest.approx([1.0, 0.5, 0.0, 0.0])


def test_simpo_values():
    """beta 2, gamma 0.5. Average log-probs -1 vs -1.25: 2 x 0.25 - 0.5 = 0 -> ln 2.
    -1 vs -2: 2 - 0.5 = 1.5 -> ln(1 + e^-1.5) = 0.201413."""
    assert simpo_loss(t(-1, -1), t(-1.25, -2), 2.0, 0.5).tolist() == pytest.approx([math.log(2), 0.201413], abs=1e-6)


def test_orpo_values():
    """p_c = 0.5 -> odds 1, log odds 0; p_r = 0.2 -> odds 0.25, log odds -ln 4.
    -log sigmoid(ln 4) = ln(1 + 1/4) = 0.223144. Equal likelihoods give ln 2."""
    assert log_odds(t(math.log(0.5), math.log(0.2))).tolist() == pytest.approx([0.0, -math.log(4)])
    assert orpo_odds_ratio_loss(t(math.log(0.5)), t(math.log(0.2))).item() == pytest.approx(math.log(1.25))
    assert orpo_odds_ratio_loss(t(-3.0), t(-3.0)).item() == pytest.approx(math.log(2))


def test_log_odds_is_finite_near_certainty():
    """p -> 1 makes 1 - p underflow; the clamp keeps log odds finite (about ln(1e6) = 13.8)."""
    value = log_odds(t(0.0)).item()
    assert math.isfinite(value) and value == pytest.approx(math.log(1e6), rel=1e-3)


def test_log1mexp_matches_the_plain_formula_and_the_odds_keep_their_gradient_near_certainty():
    """log(1 - e^x) at x = -1e-3, -0.5, -2, -30 in float64 against math (the plain formula is exact
    enough there). At avg log-prob -1e-8 (p = 1 - 1e-8) the value is taken at the bound, but the
    odds-ratio loss still has a finite, negative gradient in the chosen log-prob (more likely chosen,
    lower loss); a plain clamp made it exactly 0."""
    from alignkit.losses.dpo import log1mexp

    xs = [-1e-3, -0.5, -2.0, -30.0]
    got = log1mexp(torch.tensor(xs, dtype=torch.float64)).tolist()
    assert got == pytest.approx([math.log(-math.expm1(x)) for x in xs], rel=1e-12)
    chosen = torch.tensor([-1e-8], requires_grad=True)
    orpo_odds_ratio_loss(chosen, t(-3.0)).sum().backward()
    assert math.isfinite(chosen.grad.item()) and chosen.grad.item() < 0


def test_preference_loss_dispatch_uses_sums_or_averages():
    """Sums: logp_c = -2, ref_c = -3 (ratio +1); logp_r = -5, ref_r = -4 (ratio -1): h = 2.
    sigmoid beta 0.5 -> -log sigmoid(1) = 0.313262; ipo beta 0.5 -> (2 - 1)^2 = 1;
    hinge beta 0.5 -> 0. simpo: averages -2/2 = -1 and -5/4 = -1.25; beta 2, gamma 0.5 -> ln 2.
    orpo: averages with 3 tokens each of ln 0.5 and ln 0.2 -> 0.223144 x beta 0.5."""
    args = dict(logp_c=t(-2), logp_r=t(-5), n_c=t(2), n_r=t(4), ref_c=t(-3), ref_r=t(-4))
    assert preference_loss("sigmoid", **args, beta=0.5).item() == pytest.approx(0.313262, abs=1e-6)
    assert preference_loss("ipo", **args, beta=0.5).item() == pytest.approx(1.0)
    assert preference_loss("hinge", **args, beta=0.5).item() == pytest.approx(0.0)
    assert preference_loss("simpo", **args, beta=2.0, simpo_gamma=0.5).item() == pytest.approx(math.log(2))
    orpo = preference_loss("orpo", t(3 * math.log(0.5)), t(3 * math.log(0.2)), t(3), t(3), None, None, beta=0.5)
    assert orpo.item() == pytest.approx(0.5 * math.log(1.25))


def test_policy_equal_to_reference_gives_ln2_for_dpo():
    """The first DPO step, policy == reference: every gap is 0, so the loss is ln 2 whatever beta."""
    logp = torch.randn(6, dtype=torch.float64)
    loss = preference_loss("sigmoid", logp, logp - 1, t(*[3] * 6), t(*[3] * 6), logp, logp - 1, beta=0.37)
    assert torch.allclose(loss, torch.full((6,), math.log(2), dtype=torch.float64))


def test_reference_needed_and_unknown_name():
    with pytest.raises(ValueError, match="needs reference"):
        preference_loss("sigmoid", t(0), t(0), t(1), t(1), None, None, beta=0.1)
    with pytest.raises(ValueError, match="unknown preference loss 'dpoo'"):
        preference_loss("dpoo", t(0), t(0), t(1), t(1), t(0), t(0), beta=0.1)
    assert set(PREFERENCE_LOSSES) == {"sigmoid", "cdpo", "ipo", "hinge", "simpo", "orpo"}


def test_gradient_pushes_chosen_up_and_rejected_down():
    """d/d logp_c of -log sigmoid(beta h) = -beta sigmoid(-beta h) < 0 (descent raises logp_c); the
    rejected side gets the opposite sign; at h = 0 each is beta / 2."""
    logp_c, logp_r = t(0.0).requires_grad_(), t(0.0).requires_grad_()
    preference_loss("sigmoid", logp_c, logp_r, t(1), t(1), t(0), t(0), beta=0.2).sum().backward()
    assert logp_c.grad.item() == pytest.approx(-0.1) and logp_r.grad.item() == pytest.approx(0.1)


def test_implicit_rewards():
    assert implicit_rewards(t(-2, -5), t(-3, -4), 0.1).tolist() == pytest.approx([0.1, -0.1])
