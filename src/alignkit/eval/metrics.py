"""Automatic metrics against references, and bootstrap intervals for any per-example score.

BLEU and chrF come from sacrebleu, ROUGE from rouge-score: the libraries' own numbers, computed
offline (`evaluate.load` would fetch metric scripts from a hub). Perplexity is exp of the model's
mean token loss on the reference responses given their prompts, from its own forward pass.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import torch


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu defaults: 13a tokenisation, 4-grams), 0-100, one reference each."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF (sacrebleu defaults), 0-100."""
    import sacrebleu

    return float(sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score)


def rouge(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F1 over the pairs (rouge-score, Porter stemming), 0-1."""
    from rouge_score import rouge_scorer

    kinds = ("rouge1", "rouge2", "rougeL")
    scorer = rouge_scorer.RougeScorer(list(kinds), use_stemmer=True)
    totals = dict.fromkeys(kinds, 0.0)
    for hyp, ref in zip(hypotheses, references):
        scores = scorer.score(ref, hyp)  # (target, prediction)
        for k in kinds:
            totals[k] += scores[k].fmeasure
    n = max(len(hypotheses), 1)
    return {k: v / n for k, v in totals.items()}


@torch.no_grad()
def perplexity(model: Any, tokenizer: Any, prompts: Sequence[Sequence[dict[str, str]]], references: Sequence[str],
               batch_size: int = 16, max_length: int = 1024) -> float:
    """exp(total NLL / total tokens) of each reference response (and its EOS) given its prompt, with
    the chat template as in training: token-weighted, so long references count by their length."""
    from alignkit.data import collate, tokenize_sample
    from alignkit.data.formats import Sample
    from alignkit.losses import sequence_nll

    examples = [tokenize_sample(tokenizer, Sample((*p, {"role": "assistant", "content": r}), "eval"), max_length)
                for p, r in zip(prompts, references)]
    examples = [e for e in examples if not isinstance(e, str)]  # a reason string: nothing left to score
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    nll = tokens = 0.0
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start:start + batch_size], tokenizer.pad_token_id)
        labels = batch.pop("labels").to(device)
        logits = model(**{k: v.to(device) for k, v in batch.items()}, use_cache=False).logits
        s, n = sequence_nll(logits, labels)
        nll += float(s.sum())
        tokens += float(n.sum())
    model.train(was_training)
    return math.exp(min(nll / max(tokens, 1.0), 50.0))


def bootstrap_interval(values: Sequence[float], statistic: Callable[[list[float]], float] | None = None,
                       resamples: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic` (default: the mean) over `values` (Efron &
    Tibshirani 1993, ch. 13): resample the examples with replacement, recompute, take the quantiles."""
    values = list(values)
    if not values:
        return (float("nan"), float("nan"))
    stat = statistic or (lambda xs: sum(xs) / len(xs))
    rng = random.Random(seed)
    n = len(values)
    draws = sorted(stat([values[rng.randrange(n)] for _ in range(n)]) for _ in range(resamples))
    lo = draws[int(math.floor((1 - level) / 2 * (resamples - 1)))]
    hi = draws[int(math.ceil((1 + level) / 2 * (resamples - 1)))]
    return (lo, hi)


def pooled_win_rate(groups: Sequence[tuple[int, int, int]], resamples: int = 4000, level: float = 0.95,
                    seed: int = 0) -> dict[str, Any]:
    """The win rate pooled over groups (e.g. seeds), each given as (wins, losses, ties) over its prompts,
    with a two-level percentile bootstrap interval: resample the groups with replacement, then the
    prompts within each drawn group (a multinomial draw of its n outcomes, since its prompts are
    exchangeable), and take wins / decided over all of them (Davison & Hinkley 1997, §3.8, resampling
    at both stages of a hierarchical design). Ties count as prompts but not in the rate."""
    import numpy as np

    counts = np.asarray([list(g) for g in groups], dtype=np.int64).reshape(-1, 3)
    wins, losses = int(counts[:, 0].sum()), int(counts[:, 1].sum())
    rate = wins / (wins + losses) if wins + losses else float("nan")
    out = {"wins": wins, "losses": losses, "ties": int(counts[:, 2].sum()), "win_rate": rate,
           "win_rate_ci95": (float("nan"), float("nan")), "groups": len(counts)}
    if not len(counts) or not wins + losses:
        return out
    rng = np.random.default_rng(seed)
    n = counts.sum(axis=1)
    p = counts / np.maximum(n, 1)[:, None]
    draws = np.empty(resamples)
    for b in range(resamples):
        pick = rng.integers(0, len(counts), len(counts))
        drawn = np.array([rng.multinomial(n[g], p[g]) if n[g] else np.zeros(3, dtype=np.int64) for g in pick])
        decided = drawn[:, 0].sum() + drawn[:, 1].sum()
        draws[b] = drawn[:, 0].sum() / decided if decided else np.nan
    draws = np.sort(draws[~np.isnan(draws)])
    lo = draws[int(math.floor((1 - level) / 2 * (len(draws) - 1)))]
    hi = draws[int(math.ceil((1 + level) / 2 * (len(draws) - 1)))]
    out["win_rate_ci95"] = (float(lo), float(hi))
    return out


def wilson_interval(wins: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion wins / n (Wilson 1927): unlike p +- z*se it stays
    inside [0, 1] and is not empty at 0 or n wins."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (centre - half, centre + half)


def paired_sign_test(base: list[bool], other: list[bool]) -> dict[str, float]:
    """Two models judged right/wrong on the same requests: `lost` (base right, other wrong), `gained`
    (the reverse), and p_worse, the exact one-sided McNemar test (McNemar 1947) of "other is wrong
    more often than base": P(X >= lost) for X ~ Binomial(lost + gained, 1/2), the chance of at least
    that many losses among the requests the two disagree on if neither were better. Requests both get
    right or both get wrong say nothing about which is better, so the test reads only the others."""
    if len(base) != len(other):
        raise ValueError(f"{len(base)} base outcomes but {len(other)} others: the requests must be the same")
    lost = sum(b and not o for b, o in zip(base, other))
    gained = sum(o and not b for b, o in zip(base, other))
    return {"lost": lost, "gained": gained, "n": len(base), "p_worse": sign_test_p(lost, gained)}


def sign_test_p(lost: int, gained: int) -> float:
    """P(X >= lost) for X ~ Binomial(lost + gained, 1/2): the exact one-sided sign test of "losses
    outnumber gains" (1.0 when there is neither)."""
    n = lost + gained
    return sum(math.comb(n, k) for k in range(lost, n + 1)) / 2 ** n
