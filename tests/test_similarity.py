"""ROUGE-L against the rouge-score package, the ROUGE index's pruning, and MinHash near-duplicates."""

from __future__ import annotations

import random

import pytest
from rouge_score import rouge_scorer

from alignkit.data.similarity import RougeIndex, lcs_length, near_duplicate_pairs, rouge_l, rouge_tokens

PAIRS = [
    ("Write a poem about the sea.", "Write a short poem about the blue sea!"),
    ("Give three tips for staying healthy.", "What are three tips for staying healthy?"),
    ("Sort 3, 1, 2 in ascending order", "sort 1 2 3"),
    ("a b c d", "d c b a"),
    ("Résumé: naïve café", "resume naive cafe"),           # non-ASCII letters split words, as in rouge-score
    ("Explain photosynthesis.", "Translate this sentence into French."),
    ("", "anything"),
    ("the the the cat", "the cat the the"),
    ("Rewrite the sentence in the passive voice: The cat chased the mouse.",
     "Rewrite this sentence in passive voice. The dog chased the ball."),
]


@pytest.mark.parametrize("a, b", PAIRS)
def test_rouge_l_matches_the_rouge_score_package(a, b):
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)  # as Self-Instruct and Alpaca call it
    assert rouge_l(a, b) == pytest.approx(scorer.score(a, b)["rougeL"].fmeasure, abs=1e-12)
    assert rouge_l(a, b) == pytest.approx(rouge_l(b, a))


def test_rouge_l_by_hand():
    """"Write a poem about the sea" (6 words) vs "Write a short poem about the blue sea" (8): the LCS
    is all 6 words of the first, so P = 6/6, R = 6/8 and F = 2 * 1 * 0.75 / 1.75 = 6/7."""
    assert lcs_length(rouge_tokens("Write a poem about the sea"), rouge_tokens("Write a short poem about the blue sea")) == 6
    assert rouge_l("Write a poem about the sea", "Write a short poem about the blue sea") == pytest.approx(6 / 7)


def test_the_index_finds_the_most_similar_text_exactly_as_a_full_scan_does():
    rng = random.Random(0)
    words = "write a poem story list of about the sea cat dog three tips give explain how why".split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 9))) for _ in range(300)]
    index = RougeIndex(texts[:200])
    for query in texts[200:]:
        best = max(rouge_l(query, t) for t in texts[:200])
        score, similar = index.most_similar(query)
        assert score == pytest.approx(best)
        assert rouge_l(query, similar) == pytest.approx(best)
    assert RougeIndex().most_similar("anything") == (0.0, "")


def test_minhash_finds_planted_near_duplicates_and_not_distinct_rows():
    rng = random.Random(1)
    vocab = [f"w{i}" for i in range(2000)]
    rows = [" ".join(rng.choice(vocab) for _ in range(40)) for _ in range(200)]  # distinct: Jaccard ~0
    planted = {}
    for k, src in enumerate((3, 50, 120)):
        words = rows[src].split()
        words[rng.randrange(len(words))] = "changed"  # one word of 40 changed: 3 of 38 shingles differ
        rows.append(" ".join(words))
        planted[(src, 200 + k)] = True
    rows.append(rows[7])  # an exact copy is a near-duplicate too
    planted[(7, 203)] = True
    pairs = near_duplicate_pairs(rows, threshold=0.8)
    assert {(i, j) for i, j, _ in pairs} == set(planted)
    assert all(s >= 0.8 for _, _, s in pairs)
    assert dict(((i, j), s) for i, j, s in pairs)[(7, 203)] == 1.0
