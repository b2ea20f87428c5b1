"""Distillation divergences against values derived by hand.

Running example: vocab of 2, teacher P = [0.5, 0.5], student Q = [0.9, 0.1], given as logits log p.
"""

from __future__ import annotations

import math

import pytest
import torch

from alignkit.losses.distill import (
    forward_kl,
    generalized_jsd,
    reverse_kl,
    token_forward_kl,
    token_generalized_jsd,
    token_reverse_kl,
)

P, Q = [0.5, 0.5], [0.9, 0.1]
# KL(P || Q) = 0.5 ln(0.5/0.9) + 0.5 ln(0.5/0.1) = -0.293893 + 0.804719
FORWARD = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
# KL(Q || P) = 0.9 ln(0.9/0.5) + 0.1 ln(0.1/0.5) = 0.529008 - 0.160944
REVERSE = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)


def _logits(*dists: list[float], dtype=torch.float32) -> torch.Tensor:
    """One sequence whose position t has the distribution dists[t], as logits log p: (1, T, V)."""
    return torch.tensor([[[math.log(p) for p in d] for d in dists]], dtype=dtype)


def _all_ones(logits: torch.Tensor) -> torch.Tensor:
    return torch.ones(logits.shape[:2], dtype=torch.bool)


def test_forward_and_reverse_kl_hand_values():
    """KL(P || Q) = 0.510826, KL(Q || P) = 0.368064: forward is teacher-first, reverse student-first."""
    teacher, student = _logits(P), _logits(Q)
    mask = _all_ones(student)
    assert FORWARD == pytest.approx(0.510826, abs=1e-6) and REVERSE == pytest.approx(0.368064, abs=1e-6)
    assert forward_kl(student, teacher, mask).item() == pytest.approx(FORWARD, abs=1e-6)
    assert reverse_kl(student, teacher, mask).item() == pytest.approx(REVERSE, abs=1e-6)


def test_generalized_jsd_hand_values():
    """beta = 0.5: M = [0.7, 0.3]; KL(P || M) = 0.5 ln(5/7) + 0.5 ln(5/3) = 0.087177,
    KL(Q || M) = 0.9 ln(9/7) + 0.1 ln(1/3) = 0.116322; JSD = 0.5 (0.087177 + 0.116322) = 0.101749,
    scaled by 1 / (0.5 * 0.5): 0.406997.
    beta = 0.25 (weights the teacher: a swapped mixture would fail here, not at 0.5):
    M = 0.25 P + 0.75 Q = [0.8, 0.2]; KL(P || M) = 0.5 ln(5/8) + 0.5 ln(5/2) = 0.223144,
    KL(Q || M) = 0.9 ln(9/8) + 0.1 ln(1/2) = 0.036690; JSD = 0.25 * 0.223144 + 0.75 * 0.036690 = 0.083303,
    scaled by 1 / (0.25 * 0.75): 0.444285."""
    teacher, student = _logits(P), _logits(Q)
    mask = _all_ones(student)
    assert generalized_jsd(student, teacher, mask, beta=0.5).item() == pytest.approx(0.406997, abs=1e-5)
    assert generalized_jsd(student, teacher, mask, beta=0.25).item() == pytest.approx(0.444285, abs=1e-5)


def test_zero_when_distributions_are_equal():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 7)
    mask = _all_ones(logits)
    for loss in (forward_kl(logits, logits, mask), reverse_kl(logits, logits, mask),
                 *(generalized_jsd(logits, logits, mask, beta=b) for b in (0.0, 0.3, 0.5, 1.0))):
        assert torch.allclose(loss, torch.zeros(2), atol=1e-6)
    # A constant shift of the logits is the same distribution.
    assert torch.allclose(forward_kl(logits + 3.0, logits, mask), torch.zeros(2), atol=1e-6)


def test_sequence_loss_is_mean_over_masked_tokens():
    """Sequence 0 has tokens (P vs Q) and (P vs P) both counted: (0.510826 + 0) / 2 = 0.255413.
    Sequence 1 counts only its first token (P vs Q): 0.510826. Sequence 2 counts none: 0."""
    teacher = _logits(P, P).repeat(3, 1, 1)
    student = _logits(Q, P).repeat(3, 1, 1)
    mask = torch.tensor([[1, 1], [1, 0], [0, 0]])
    expected = torch.tensor([FORWARD / 2, FORWARD, 0.0])
    assert torch.allclose(forward_kl(student, teacher, mask), expected, atol=1e-6)
    per_token = token_forward_kl(student, teacher)
    assert per_token.shape == (3, 2)
    assert torch.allclose(per_token[0], torch.tensor([FORWARD, 0.0]), atol=1e-6)


def test_masked_positions_do_not_change_the_loss():
    """Anything at masked positions, even huge or -inf logits, leaves the loss and its gradient alone."""
    torch.manual_seed(1)
    student, teacher = torch.randn(2, 5, 6), torch.randn(2, 5, 6)
    mask = torch.tensor([[1, 1, 0, 1, 0], [0, 1, 1, 0, 0]], dtype=torch.bool)
    student2, teacher2 = student.clone(), teacher.clone()
    student2[~mask] = torch.randn(int((~mask).sum()), 6) * 100
    teacher2[~mask] = float("-inf")
    for fn, kw in ((forward_kl, {}), (reverse_kl, {}), (generalized_jsd, {"beta": 0.3})):
        a = fn(student, teacher, mask, **kw)
        b = fn(student2, teacher2, mask, **kw)
        assert torch.allclose(a, b, atol=1e-6), fn.__name__


def test_jsd_ends_are_exactly_the_two_kl_directions():
    """beta = 0 is forward KL(teacher || student), beta = 1 reverse KL(student || teacher)."""
    torch.manual_seed(2)
    student, teacher = torch.randn(3, 4, 9), torch.randn(3, 4, 9)
    mask = torch.rand(3, 4) < 0.7
    assert torch.equal(generalized_jsd(student, teacher, mask, beta=0.0), forward_kl(student, teacher, mask))
    assert torch.equal(generalized_jsd(student, teacher, mask, beta=1.0), reverse_kl(student, teacher, mask))
    two_token = (_logits(Q), _logits(P), torch.ones(1, 1))
    assert generalized_jsd(*two_token, beta=0.0).item() == pytest.approx(FORWARD, abs=1e-6)
    assert generalized_jsd(*two_token, beta=1.0).item() == pytest.approx(REVERSE, abs=1e-6)


def test_jsd_is_continuous_at_its_ends():
    """JSD(beta) / (beta (1 - beta)) = KL(P || Q) + O(beta) near 0 and KL(Q || P) + O(1 - beta) near 1:
    in float64 the gap to each KL shrinks about tenfold per tenfold step towards the end."""
    student, teacher = _logits(Q, dtype=torch.float64), _logits(P, dtype=torch.float64)
    mask = torch.ones(1, 1)
    gaps_low = [abs(generalized_jsd(student, teacher, mask, beta=b).item() - FORWARD) for b in (1e-2, 1e-3, 1e-4)]
    gaps_high = [abs(generalized_jsd(student, teacher, mask, beta=1 - b).item() - REVERSE) for b in (1e-2, 1e-3, 1e-4)]
    for gaps in (gaps_low, gaps_high):
        assert gaps[0] > gaps[1] > gaps[2]
        assert gaps[2] < 1e-3 * max(FORWARD, REVERSE)
        assert gaps[1] / gaps[2] == pytest.approx(10, rel=0.1)
    # float32, random data, a little further in: still close.
    torch.manual_seed(3)
    s, t = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    m = _all_ones(s)
    assert torch.allclose(generalized_jsd(s, t, m, beta=1e-3), forward_kl(s, t, m), rtol=1e-2)
    assert torch.allclose(generalized_jsd(s, t, m, beta=1 - 1e-3), reverse_kl(s, t, m), rtol=1e-2)


def test_jsd_half_is_symmetric_and_kl_is_not():
    """JSD(0.5)(P || Q) has M = (P + Q) / 2 and equal weights, so swapping teacher and student leaves
    it unchanged; KL swaps into the other direction (0.510826 <-> 0.368064)."""
    torch.manual_seed(4)
    a, b = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    mask = _all_ones(a)
    assert torch.allclose(generalized_jsd(a, b, mask, beta=0.5), generalized_jsd(b, a, mask, beta=0.5), atol=1e-6)
    assert torch.allclose(forward_kl(a, b, mask), reverse_kl(b, a, mask), atol=1e-6)
    assert not torch.allclose(forward_kl(a, b, mask), forward_kl(b, a, mask), atol=1e-3)
    # JSD(beta) with teacher and student swapped is JSD(1 - beta).
    assert torch.allclose(generalized_jsd(a, b, mask, beta=0.2), generalized_jsd(b, a, mask, beta=0.8), atol=1e-6)


def test_temperature_softens_and_rescales():
    """T = 2 on logits log p gives p^(1/2) renormalised: teacher stays [0.5, 0.5], student [3, 1] / 4.
    KL([0.5, 0.5] || [0.75, 0.25]) = 0.5 ln(2/3) + 0.5 ln 2 = 0.143841, times T^2 = 4: 0.575364."""
    teacher, student = _logits(P), _logits(Q)
    mask = _all_ones(student)
    assert forward_kl(student, teacher, mask, temperature=2.0).item() == pytest.approx(0.575364, abs=1e-5)
    # Temperature 1 is no-op; the T^2 factor applies to every divergence.
    assert forward_kl(student, teacher, mask, temperature=1.0).item() == pytest.approx(FORWARD, abs=1e-6)
    soft = _logits([0.75, 0.25])
    assert reverse_kl(student, teacher, mask, temperature=2.0).item() == pytest.approx(
        4 * reverse_kl(soft, teacher, mask).item(), abs=1e-5)
    assert generalized_jsd(student, teacher, mask, beta=0.3, temperature=2.0).item() == pytest.approx(
        4 * generalized_jsd(soft, teacher, mask, beta=0.3).item(), abs=1e-5)


def test_high_temperature_gradient_matches_logit_matching():
    """Hinton et al. 2015, sec. 2.1: d(T^2 KL)/dz_i = T (q_i - p_i) -> (z_i - v_i) / V as T grows, for
    zero-mean student logits z and teacher logits v. The T^2 factor is what keeps this O(1)."""
    torch.manual_seed(5)
    v = torch.randn(1, 1, 6)
    z = torch.randn(1, 1, 6)
    v, z = v - v.mean(-1, keepdim=True), (z - z.mean(-1, keepdim=True)).requires_grad_(True)
    forward_kl(z, v, torch.ones(1, 1), temperature=1000.0).sum().backward()
    assert torch.allclose(z.grad, (z.detach() - v) / 6, atol=1e-3)


def test_gradients_are_finite_and_flow_to_the_student():
    """Including -inf logits (a banned token in both models) and identical distributions."""
    torch.manual_seed(6)
    student = torch.randn(2, 3, 5)
    teacher = torch.randn(2, 3, 5)
    student[:, :, 4] = float("-inf")
    teacher[:, :, 4] = float("-inf")
    mask = _all_ones(student)
    for fn, kw in ((forward_kl, {}), (reverse_kl, {}), (generalized_jsd, {"beta": 0.0}),
                   (generalized_jsd, {"beta": 0.5}), (generalized_jsd, {"beta": 1.0})):
        for t in (teacher, student.clone()):
            s = student.clone().requires_grad_(True)
            loss = fn(s, t, mask, **kw)
            assert torch.isfinite(loss).all(), fn.__name__
            loss.sum().backward()
            assert torch.isfinite(s.grad).all(), (fn.__name__, kw)
        assert s.grad.abs().max() < 1e-6  # the last pass had student == teacher: a minimum


def test_half_precision_logits_are_upcast():
    teacher, student = _logits(P).bfloat16(), _logits(Q).bfloat16()
    loss = forward_kl(student, teacher, _all_ones(student))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(FORWARD, abs=1e-2)


def test_shape_errors_are_clear():
    s = torch.zeros(2, 3, 5)
    mask = torch.ones(2, 3)
    with pytest.raises(ValueError, match=r"vocab sizes differ: student has 5, teacher has 8"):
        forward_kl(s, torch.zeros(2, 3, 8), mask)
    with pytest.raises(ValueError, match=r"same \(batch, seq_len\)"):
        reverse_kl(s, torch.zeros(2, 4, 5), mask)
    with pytest.raises(ValueError, match=r"mask must be \(batch, seq_len\) = \(2, 3\); got \(2, 4\)"):
        generalized_jsd(s, s, torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"\(batch, seq_len, vocab\)"):
        token_reverse_kl(torch.zeros(3, 5), torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\]; got 1.5"):
        generalized_jsd(s, s, mask, beta=1.5)
    with pytest.raises(ValueError, match=r"temperature must be > 0; got 0"):
        token_forward_kl(s, s, temperature=0)


def _reference(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, kind: str, beta: float,
               temperature: float) -> list[float]:
    """Plain Python over floats: softmax, the divergence's definition, mean over masked tokens."""
    def softmax(row):
        row = [x / temperature for x in row]
        top = max(row)
        e = [math.exp(x - top) for x in row]
        return [x / sum(e) for x in e]

    def kl(a, b):
        return sum(x * math.log(x / y) for x, y in zip(a, b, strict=True) if x > 0)

    out = []
    for i in range(student.shape[0]):
        total, count = 0.0, 0
        for j in range(student.shape[1]):
            if not mask[i, j]:
                continue
            q, p = softmax(student[i, j].tolist()), softmax(teacher[i, j].tolist())
            if kind == "forward":
                d = kl(p, q)
            elif kind == "reverse":
                d = kl(q, p)
            else:
                m = [beta * x + (1 - beta) * y for x, y in zip(p, q, strict=True)]
                d = (beta * kl(p, m) + (1 - beta) * kl(q, m)) / (beta * (1 - beta))
            total += temperature**2 * d
            count += 1
        out.append(total / count if count else 0.0)
    return out


@pytest.mark.parametrize("temperature", [1.0, 0.7, 2.5])
def test_matches_plain_loop_on_random_data(temperature):
    torch.manual_seed(7)
    student, teacher = torch.randn(3, 6, 11) * 2, torch.randn(3, 6, 11) * 2
    mask = torch.rand(3, 6) < 0.6
    mask[2] = False  # one sequence with nothing to learn from
    cases = [(forward_kl, "forward", {}), (reverse_kl, "reverse", {})]
    cases += [(generalized_jsd, "jsd", {"beta": b}) for b in (0.1, 0.5, 0.9)]
    for fn, kind, kw in cases:
        got = fn(student, teacher, mask, temperature=temperature, **kw)
        want = torch.tensor(_reference(student, teacher, mask, kind, kw.get("beta", 0.0), temperature))
        assert got.shape == (3,)
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-6), (kind, kw)
    per_token = token_generalized_jsd(student, teacher, beta=0.5, temperature=temperature)
    assert per_token.shape == (3, 6) and (per_token >= -1e-6).all()
