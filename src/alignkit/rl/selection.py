"""Best-of-n selection: pick the highest-scored of n samples, and measure what n buys.

The gain of best-of-k for every k <= n comes from the same n samples per prompt, without resampling:
the expected maximum of k scores drawn without replacement from n is a weighted sum of the sorted
scores (an unbiased estimate of E[max of k fresh samples]; Nakano et al. 2021 use best-of-n this way
as a baseline, and the estimator is the standard one for pass@k-style metrics, Chen et al. 2021).
"""

from __future__ import annotations

import math

import torch


def best_of_k_weights(n: int, k: int) -> torch.Tensor:
    """(n,) weights w_i = C(i - 1, k - 1) / C(n, k) on the scores sorted ascending (i = 1..n): the
    probability that the i-th smallest is the largest of k drawn without replacement."""
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n={n}], got {k}")
    return torch.tensor([math.comb(i - 1, k - 1) / math.comb(n, k) for i in range(1, n + 1)], dtype=torch.float64)


def expected_best_of_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """(P,) expected best score of k of the n samples of each prompt; scores (P, n). k=1 is the mean,
    k=n the maximum."""
    ordered = scores.double().sort(dim=1).values
    return ordered @ best_of_k_weights(scores.shape[1], k)


def expected_pick_of_k(scores: torch.Tensor, k: int, eligible: torch.Tensor) -> torch.Tensor:
    """(P,) expected score of what pick_best chooses from k of the n samples drawn without
    replacement, when only `eligible` samples (P, n) may be chosen unless none of the k is: the best
    eligible one of the subset if it has any, else the best of the subset. For an eligible sample
    with a eligible ones scored above it: P(it is picked) = C(n - 1 - a, k - 1) / C(n, k) (the other
    k - 1 avoid those a); for an ineligible one with b ineligible ones below it: C(b, k - 1) / C(n, k)
    (the other k - 1 all among those b, so no eligible sample is drawn). Ties are broken by index."""
    n = scores.shape[1]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n={n}], got {k}")
    total = math.comb(n, k)
    out = []
    for row, ok in zip(scores.double().tolist(), eligible.bool().tolist()):
        good = sorted((s, i) for i, (s, e) in enumerate(zip(row, ok)) if e)
        bad = sorted((s, i) for i, (s, e) in enumerate(zip(row, ok)) if not e)
        value = sum(s * math.comb(n - 1 - (len(good) - 1 - r), k - 1) for r, (s, _) in enumerate(good))
        value += sum(s * math.comb(b, k - 1) for b, (s, _) in enumerate(bad))
        out.append(value / total)
    return torch.tensor(out, dtype=torch.float64)


def pick_best(scores: torch.Tensor, eligible: torch.Tensor | None = None) -> torch.Tensor:
    """(P,) index of the best-scored sample per prompt among the eligible ones (all, if a prompt
    has none eligible); ties go to the first sample."""
    if eligible is None:
        return scores.argmax(dim=1)
    none = ~eligible.any(dim=1, keepdim=True)
    allowed = eligible | none
    return scores.masked_fill(~allowed, float("-inf")).argmax(dim=1)
