"""Token-level distillation divergences between a teacher's and a student's next-token distributions.

Each position t of a sequence has a teacher distribution P_T(. | x_<t) and a student distribution
P_S(. | x_<t) over the same vocabulary. The losses here compare them token by token, summed over the
vocabulary, and average over the masked (response) tokens of each sequence, as in GKD (Agarwal et al.
2024, "On-Policy Distillation of Language Models: Learning from Self-Generated Mistakes", ICLR):

- forward_kl:      KL(P_T || P_S), mode-covering; the classic distillation target (Hinton et al. 2015).
- reverse_kl:      KL(P_S || P_T), mode-seeking (MiniLLM, Gu et al. 2024).
- generalized_jsd: the skew Jensen-Shannon divergence JSD(beta) of GKD, scaled so that beta = 0 is
                   exactly forward_kl and beta = 1 exactly reverse_kl (see its docstring).

Shapes: logits (B, T, V) for both models, aligned so that position t of each predicts the same token;
mask (B, T), bool or 0/1, true on tokens that count. Per-token helpers return (B, T); the sequence
losses return (B,). All math runs in log space, in float32 at least (half and bfloat16 logits are
upcast; float64 stays float64).
"""

from __future__ import annotations

import math

import torch

from alignkit.rl.advantages import masked_mean


def _check_shapes(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None = None) -> None:
    if student_logits.dim() != 3 or teacher_logits.dim() != 3:
        raise ValueError(f"distillation logits must be (batch, seq_len, vocab); got student {tuple(student_logits.shape)} "
                         f"and teacher {tuple(teacher_logits.shape)}")
    if student_logits.shape[-1] != teacher_logits.shape[-1]:
        raise ValueError(f"teacher and student vocab sizes differ: student has {student_logits.shape[-1]}, teacher has "
                         f"{teacher_logits.shape[-1]}; distillation needs one shared tokenizer and equal vocab dims")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"teacher and student logits must have the same (batch, seq_len): student "
                         f"{tuple(student_logits.shape[:2])}, teacher {tuple(teacher_logits.shape[:2])}")
    if mask is not None and tuple(mask.shape) != tuple(student_logits.shape[:2]):
        raise ValueError(f"mask must be (batch, seq_len) = {tuple(student_logits.shape[:2])}; got {tuple(mask.shape)}")


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")


def _log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    dtype = torch.promote_types(logits.dtype, torch.float32)
    return torch.log_softmax(logits.to(dtype) / temperature, dim=-1)


def _kl_from_logprobs(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """sum_v p_v (log p_v - log q_v): (..., V) -> (...), with 0 log 0 = 0.

    The difference is zeroed where p_v = 0 before multiplying, so a -inf logit (a banned token) gives
    neither a NaN value nor a NaN gradient.
    """
    p = logp.exp()
    diff = torch.where(p > 0, logp - logq, torch.zeros_like(logp))
    return (p * diff).sum(-1)


def _sequence_mean(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked tokens of each sequence: (B, T) -> (B,); 0 for a sequence with no masked token.

    torch.where, not a product, so whatever sits at masked positions (even inf) cannot leak in.
    """
    mask = mask.bool()
    return masked_mean(torch.where(mask, per_token, torch.zeros_like(per_token)), mask, dim=1)


def token_forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-token KL(P_T || P_S) = sum_v P_T(v) (log P_T(v) - log P_S(v)): (B, T, V) x 2 -> (B, T).

    Both logits are divided by `temperature` before the softmax and the result is multiplied by
    temperature^2, so gradient magnitudes stay comparable across temperatures (Hinton et al. 2015, sec. 2).
    """
    _check_shapes(student_logits, teacher_logits)
    _check_temperature(temperature)
    log_s, log_t = _log_probs(student_logits, temperature), _log_probs(teacher_logits, temperature)
    return temperature**2 * _kl_from_logprobs(log_t, log_s)


def token_reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-token KL(P_S || P_T) = sum_v P_S(v) (log P_S(v) - log P_T(v)): (B, T, V) x 2 -> (B, T).

    Temperature as in token_forward_kl (logits / temperature, loss * temperature^2).
    """
    _check_shapes(student_logits, teacher_logits)
    _check_temperature(temperature)
    log_s, log_t = _log_probs(student_logits, temperature), _log_probs(teacher_logits, temperature)
    return temperature**2 * _kl_from_logprobs(log_s, log_t)


def token_generalized_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float = 0.5,
                          temperature: float = 1.0) -> torch.Tensor:
    """Per-token scaled generalised JSD: (B, T, V) x 2 -> (B, T).

    GKD (Agarwal et al. 2024, "Generalized JSD") defines, with P = P_T the teacher and
    Q = P_S the student,

        M = beta P + (1 - beta) Q,
        JSD(beta)(P || Q) = beta KL(P || M) + (1 - beta) KL(Q || M),

    which is 0 at both ends beta = 0 and beta = 1 (M equals one of the two arguments and the other
    term is weighted by 0). Expanding to first order in beta near 0, KL(Q || M) = O(beta^2), so
    JSD(beta) = beta KL(P || Q) + O(beta^2); near 1, symmetrically, JSD(beta) = (1 - beta) KL(Q || P)
    + O((1 - beta)^2). This function returns

        JSD(beta) / (beta (1 - beta))   for 0 < beta < 1,
        KL(P_T || P_S)  (forward KL)    at beta = 0,
        KL(P_S || P_T)  (reverse KL)    at beta = 1,

    which is continuous on [0, 1], so `beta` slides from forward to reverse KL. This matches the
    direction GKD and TRL's GKDTrainer describe (beta -> 0 behaves like forward KL, beta -> 1 like
    reverse KL; GKD credits this to Huszar 2015, "How (not) to train your generative model").
    The scaling is ours: multiply by beta (1 - beta) to get the paper's unscaled value, e.g. at the
    default beta = 0.5 this loss is 4 JSD(0.5) = 2 (KL(P || M) + KL(Q || M)). The mixture is built in
    log space: log M = logsumexp(log beta + log P, log(1 - beta) + log Q). Very close to an end
    (beta or 1 - beta below ~1e-3) the O(beta^2) term is a small difference of logs divided by a small
    number, so float32 loses digits there; use the exact end or float64 logits.

    Temperature as in token_forward_kl (logits / temperature, loss * temperature^2).
    """
    _check_shapes(student_logits, teacher_logits)
    _check_temperature(temperature)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"generalized_jsd beta must be in [0, 1]; got {beta}")
    log_s, log_t = _log_probs(student_logits, temperature), _log_probs(teacher_logits, temperature)
    if beta == 0.0:
        return temperature**2 * _kl_from_logprobs(log_t, log_s)
    if beta == 1.0:
        return temperature**2 * _kl_from_logprobs(log_s, log_t)
    # A token both models rule out (-inf logit) is outside the mixture's support and its KL terms are 0;
    # fill it with a finite value so logsumexp's backward does not produce exp(-inf - -inf) = NaN.
    both_out = torch.isneginf(log_t) & torch.isneginf(log_s)
    weighted = torch.stack([log_t + math.log(beta), log_s + math.log1p(-beta)]).masked_fill(both_out, 0.0)
    log_m = torch.logsumexp(weighted, dim=0)
    jsd = beta * _kl_from_logprobs(log_t, log_m) + (1.0 - beta) * _kl_from_logprobs(log_s, log_m)
    return temperature**2 * jsd / (beta * (1.0 - beta))


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
               temperature: float = 1.0) -> torch.Tensor:
    """Per-sequence mean over masked tokens of KL(P_T || P_S) (token_forward_kl): -> (B,)."""
    _check_shapes(student_logits, teacher_logits, mask)
    return _sequence_mean(token_forward_kl(student_logits, teacher_logits, temperature), mask)


def reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
               temperature: float = 1.0) -> torch.Tensor:
    """Per-sequence mean over masked tokens of KL(P_S || P_T) (token_reverse_kl): -> (B,)."""
    _check_shapes(student_logits, teacher_logits, mask)
    return _sequence_mean(token_reverse_kl(student_logits, teacher_logits, temperature), mask)


def generalized_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor, beta: float = 0.5,
                    temperature: float = 1.0) -> torch.Tensor:
    """Per-sequence mean over masked tokens of the scaled JSD(beta) (token_generalized_jsd): -> (B,).

    beta = 0 is forward_kl, beta = 1 is reverse_kl, continuous in between.
    """
    _check_shapes(student_logits, teacher_logits, mask)
    return _sequence_mean(token_generalized_jsd(student_logits, teacher_logits, beta, temperature), mask)
