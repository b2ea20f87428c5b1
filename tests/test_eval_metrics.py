"""Automatic metrics: BLEU, chrF and ROUGE equal the libraries' own numbers on fixed strings;
perplexity equals exp of the model's mean token loss; bootstrap intervals cover the true rate."""

from __future__ import annotations

import math
import random

import pytest
import torch

from alignkit.eval.metrics import (bleu, bootstrap_interval, chrf, paired_sign_test, perplexity, rouge, sign_test_p,
                                   wilson_interval)

HYPS = ["the cat sat on the mat", "a quick brown fox jumps over the dog", "hello there general kenobi"]
REFS = ["the cat is on the mat", "the quick brown fox jumps over the lazy dog", "hello there general kenobi"]


def test_bleu_and_chrf_are_sacrebleus():
    import sacrebleu

    assert bleu(HYPS, REFS) == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score)
    assert chrf(HYPS, REFS) == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score)
    assert bleu(REFS, REFS) == pytest.approx(100.0)


def test_rouge_is_rouge_scores_mean_f1():
    """Pair 3 is identical (F1 1 for every kind). Pair 1, ROUGE-1: 6 and 6 tokens sharing 5 (the, cat,
    on, the, mat) -> P = R = F = 5/6."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    expected = {k: sum(scorer.score(r, h)[k].fmeasure for h, r in zip(HYPS, REFS)) / 3
                for k in ("rouge1", "rouge2", "rougeL")}
    assert rouge(HYPS, REFS) == pytest.approx(expected)
    assert rouge(HYPS[:1], REFS[:1])["rouge1"] == pytest.approx(5 / 6)


def test_perplexity_is_exp_of_the_mean_token_loss(tiny_dir):
    """Against the model's own loss: one conversation at a time, token-weighted by hand."""
    from alignkit.data import tokenize_sample
    from alignkit.data.formats import Sample
    from alignkit.models import load_causal_lm, load_tokenizer

    model, tok = load_causal_lm(tiny_dir), load_tokenizer(tiny_dir)
    prompts = [[{"role": "user", "content": f"Reverse the word {w}."}] for w in ("apple", "pear", "fig")]
    refs = ["elppa", "raep", "gif and more words here"]
    total = count = 0.0
    with torch.no_grad():
        for p, r in zip(prompts, refs):
            ex = tokenize_sample(tok, Sample((*p, {"role": "assistant", "content": r}), "t"), 1024)
            labels = torch.tensor([ex.labels])
            loss = model(input_ids=torch.tensor([ex.input_ids]), labels=labels).loss  # mean over its tokens
            n = int((labels[:, 1:] != -100).sum())
            total += float(loss) * n
            count += n
    assert perplexity(model, tok, prompts, refs, batch_size=2) == pytest.approx(math.exp(total / count), rel=1e-5)


def test_bootstrap_interval_covers_the_true_rate():
    """200 synthetic data sets of 100 Bernoulli(0.3) draws: the 95% interval holds 0.3 in about 95%
    of them (between 90% and 99% allows for the simulation's own noise and the percentile method)."""
    rng = random.Random(1)
    covered = 0
    for trial in range(200):
        xs = [1.0 if rng.random() < 0.3 else 0.0 for _ in range(100)]
        lo, hi = bootstrap_interval(xs, resamples=400, seed=trial)
        covered += lo <= 0.3 <= hi
    assert 0.90 <= covered / 200 <= 0.99


def test_bootstrap_of_a_constant_and_of_nothing():
    assert bootstrap_interval([2.0] * 10) == (2.0, 2.0)
    assert all(math.isnan(x) for x in bootstrap_interval([]))


def test_wilson_interval_values():
    """z = 1.96, z^2 = 3.8416. Centre (p + z^2/2n) / (1 + z^2/n), half-width
    z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n).
    50/100: centre 0.5, half 1.96 sqrt(0.0025 + 0.00009604) / 1.038416 = 0.09617 -> (0.4038, 0.5962).
    2/10 (p = 0.2): centre 0.39208 / 1.38416 = 0.28326, half 1.96 sqrt(0.016 + 0.009604) / 1.38416
    = 0.22658 -> (0.05668, 0.50984): not symmetric around 0.2, unlike p +- 1.96 se.
    0/10: centre = half = 0.19208 / 1.38416 = 0.13877 -> (0, 0.27754), not the empty (0, 0)."""
    assert wilson_interval(50, 100) == pytest.approx((0.40383, 0.59617), abs=1e-4)
    assert wilson_interval(2, 10) == pytest.approx((0.05668, 0.50984), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27754), abs=1e-4)
    lo, hi = wilson_interval(0, 0)
    assert lo != lo and hi != hi  # no decided prompts: no interval (NaN)


def test_paired_sign_test_reads_only_the_requests_the_models_disagree_on():
    """Base right on 1-5, other right on 1-3 and 6: lost 2 (requests 4, 5), gained 1 (6); among 3
    disagreements P(X >= 2) for X ~ Bin(3, 1/2) = (3 + 1) / 8 = 0.5. Three losses and no gain:
    1/8. No disagreement: p = 1 (nothing says other is worse). Lost 0, gained 4: P(X >= 0) = 1."""
    base = [True] * 5 + [False] * 2
    other = [True] * 3 + [False, False, True, False]
    assert paired_sign_test(base, other) == {"lost": 2, "gained": 1, "n": 7, "p_worse": 0.5}
    assert paired_sign_test([True] * 3, [False] * 3)["p_worse"] == 0.125
    assert paired_sign_test([True, False], [True, False])["p_worse"] == 1.0
    assert paired_sign_test([False] * 4, [True] * 4)["p_worse"] == 1.0
    with pytest.raises(ValueError, match="must be the same"):
        paired_sign_test([True], [True, False])


def test_sign_test_p_by_hand():
    """P(X >= k), X ~ Bin(n, 1/2): 2 losses, 3 gains: (C(5,2)+C(5,3)+C(5,4)+C(5,5)) / 32 = 26/32;
    4 losses, 0 gains: 1/16; 0 and 0: 1."""
    assert sign_test_p(2, 3) == 26 / 32
    assert sign_test_p(4, 0) == 1 / 16
    assert sign_test_p(0, 0) == 1.0
