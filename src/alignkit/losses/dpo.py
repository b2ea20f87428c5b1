"""Offline preference losses (the DPO family): per-pair losses from sequence log-probabilities.

Notation, per pair: logp_c, logp_r are the policy's summed log-probabilities of the chosen and the
rejected response given the prompt; ref_c, ref_r the reference model's; n_c, n_r their token counts.
The log-ratio gap is  h = (logp_c - ref_c) - (logp_r - ref_r); beta * (logp - ref) is a response's
implicit reward (Rafailov et al. 2023, eq. 5).

Each function takes (P,) tensors and returns the (P,) loss; `PREFERENCE_LOSSES` maps a config name to
the function and the inputs it needs, so the stage calls every variant the same way.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def dpo_loss(gap: torch.Tensor, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """DPO (Rafailov et al. 2023, eq. 7): -log sigmoid(beta h). With label_smoothing e > 0 it is
    conservative DPO (Mitchell 2023, "A note on DPO with noisy preferences"): each label is taken as
    wrong with probability e, so  -(1 - e) log sigmoid(beta h) - e log sigmoid(-beta h)."""
    z = beta * gap
    loss = -F.logsigmoid(z)
    if label_smoothing:
        loss = (1.0 - label_smoothing) * loss - label_smoothing * F.logsigmoid(-z)
    return loss


def ipo_loss(gap: torch.Tensor, beta: float) -> torch.Tensor:
    """IPO (Azar et al. 2023, eq. 17): (h - 1 / (2 beta))^2, a squared loss that pulls the gap to a
    finite target instead of pushing it to infinity, so it does not overfit deterministic labels.
    Here beta is the paper's tau, and h uses summed log-probabilities as in the paper."""
    return (gap - 1.0 / (2.0 * beta)) ** 2


def hinge_loss(gap: torch.Tensor, beta: float) -> torch.Tensor:
    """SLiC-style hinge on the log-ratio gap (Zhao et al. 2023, eq. 2 with the DPO reference):
    max(0, 1 - beta h): zero once the gap exceeds 1 / beta."""
    return torch.relu(1.0 - beta * gap)


def simpo_loss(avg_logp_c: torch.Tensor, avg_logp_r: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """SimPO (Meng et al. 2024, eq. 6), reference-free and length-normalised:
    -log sigmoid(beta (logp_c / n_c - logp_r / n_r) - gamma), with gamma the target reward margin."""
    return -F.logsigmoid(beta * (avg_logp_c - avg_logp_r) - gamma)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - e^x) for x < 0, accurate everywhere (Maechler 2012): log(-expm1(x)) near 0, where
    1 - e^x cancels, and log1p(-exp(x)) below -ln 2."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def log_odds(avg_logp: torch.Tensor) -> torch.Tensor:
    """log(p / (1 - p)) for p = exp(avg_logp). At p = 1 in floating point the odds are infinite, so
    the value is taken at avg_logp = -1e-6 at most; the gradient passes through that bound (a plain
    clamp would silently zero it for every response the model is nearly sure of)."""
    bounded = avg_logp - (avg_logp - avg_logp.clamp(max=-1e-6)).detach()
    return bounded - log1mexp(bounded)


def orpo_odds_ratio_loss(avg_logp_c: torch.Tensor, avg_logp_r: torch.Tensor) -> torch.Tensor:
    """ORPO's odds-ratio term (Hong et al. 2024, eq. 7): -log sigmoid(log odds(y_c) - log odds(y_r)),
    with odds from the length-normalised likelihood. ORPO adds lambda times this to the chosen
    response's NLL (eq. 6), with no reference model."""
    return -F.logsigmoid(log_odds(avg_logp_c) - log_odds(avg_logp_r))


def implicit_rewards(logp: torch.Tensor, ref: torch.Tensor, beta: float) -> torch.Tensor:
    """beta (logp - ref): the reward a DPO policy implies for a response (Rafailov et al. 2023, eq. 5)."""
    return beta * (logp - ref)


def preference_loss(name: str, logp_c: torch.Tensor, logp_r: torch.Tensor, n_c: torch.Tensor, n_r: torch.Tensor,
                    ref_c: torch.Tensor | None, ref_r: torch.Tensor | None, *, beta: float,
                    label_smoothing: float = 0.0, simpo_gamma: float = 0.5) -> torch.Tensor:
    """The named variant's (P,) loss, without any NLL term (the stage adds that).

    orpo returns only the odds-ratio term, scaled by beta (ORPO's lambda); simpo and orpo ignore the
    reference, the others require it.
    """
    if name in REFERENCE_FREE:
        avg_c, avg_r = logp_c / n_c.clamp(min=1), logp_r / n_r.clamp(min=1)
        if name == "simpo":
            return simpo_loss(avg_c, avg_r, beta, simpo_gamma)
        return beta * orpo_odds_ratio_loss(avg_c, avg_r)
    if ref_c is None or ref_r is None:
        raise ValueError(f"preference loss '{name}' needs reference log-probabilities")
    gap = (logp_c - ref_c) - (logp_r - ref_r)
    if name in ("sigmoid", "cdpo"):
        return dpo_loss(gap, beta, label_smoothing)
    if name == "ipo":
        return ipo_loss(gap, beta)
    if name == "hinge":
        return hinge_loss(gap, beta)
    raise ValueError(f"unknown preference loss '{name}'; expected one of {', '.join(PREFERENCE_LOSSES)}")


# name -> what it is; the config's `loss` field takes these names.
PREFERENCE_LOSSES = {
    "sigmoid": "DPO, -log sigmoid(beta h)",
    "cdpo": "conservative DPO: DPO with label_smoothing as the label-noise rate",
    "ipo": "IPO, (h - 1/(2 beta))^2",
    "hinge": "hinge, max(0, 1 - beta h)",
    "simpo": "SimPO, reference-free and length-normalised, margin simpo_gamma",
    "orpo": "ORPO, chosen NLL + beta x odds-ratio term, reference-free",
}
REFERENCE_FREE = ("simpo", "orpo")


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor, sequence: torch.Tensor, num_sequences: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-probs (N,), token counts (N,)) of each sequence's labelled tokens.

    logits (R, W, V) of rows that may pack several sequences; labels (R, W) with -100 where nothing is
    scored; sequence (R, W) the index of the sequence a label belongs to (-1 elsewhere). Position t
    predicts token t + 1.
    """
    targets, owner = labels[:, 1:], sequence[:, 1:]
    keep = owner >= 0
    # Only the labelled positions go through the log-softmax: prompts and padding cost nothing here.
    logp = torch.log_softmax(logits[:, :-1][keep].float(), dim=-1)
    taken = logp.gather(-1, targets[keep].unsqueeze(-1)).squeeze(-1)
    sums = taken.new_zeros(num_sequences).index_add(0, owner[keep], taken)
    counts = torch.zeros(num_sequences, device=logits.device).index_add(0, owner[keep], torch.ones_like(taken))
    return sums, counts
