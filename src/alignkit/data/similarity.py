"""How alike two texts are: ROUGE-L (Self-Instruct's novelty test) and MinHash near-duplicates.

ROUGE-L here is the F-measure of the longest common subsequence of words (Lin 2004, sec. 3.1),
tokenised as the `rouge-score` package does without stemming (lower case; every run of characters
other than a-z and 0-9 splits words), which is what Self-Instruct (Wang et al. 2022, sec. 2.3) and
Alpaca used to keep a new instruction only when its ROUGE-L to every kept one is below 0.7. It is
written out because the filter compares each candidate with thousands of kept instructions: the kept
ones are tokenised once (`RougeIndex`), and the package is the reference the tests compare against.

Near-duplicates are found with MinHash signatures over word shingles and LSH banding from
`datasketch` (Broder 1997); each candidate pair is then confirmed with the exact Jaccard similarity
of the shingle sets, so a reported pair is never a hashing accident.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    """Words as rouge-score's default tokenizer sees them without a stemmer."""
    return [t for t in _NON_ALNUM.sub(" ", text.lower()).split() if t]


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, one row kept)."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l_tokens(a: Sequence[str], b: Sequence[str]) -> float:
    """ROUGE-L F1 of two token lists: 2PR/(P+R) with P = LCS/|a|, R = LCS/|b|; 0 when either is empty."""
    if not a or not b:
        return 0.0
    lcs = lcs_length(a, b)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return 2 * p * r / (p + r)


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F1 of two texts (symmetric)."""
    return rouge_l_tokens(rouge_tokens(a), rouge_tokens(b))


class RougeIndex:
    """Texts kept so far, tokenised once: the highest ROUGE-L of a new text to any of them."""

    def __init__(self, texts: Sequence[str] = ()) -> None:
        self.texts: list[str] = []
        self.tokens: list[list[str]] = []
        self._counts: list[Counter] = []
        for t in texts:
            self.add(t)

    def __len__(self) -> int:
        return len(self.texts)

    def add(self, text: str) -> None:
        tokens = rouge_tokens(text)
        self.texts.append(text)
        self.tokens.append(tokens)
        self._counts.append(Counter(tokens))

    def most_similar(self, text: str) -> tuple[float, str]:
        """(ROUGE-L, the kept text) of the kept text most like `text`; (0.0, "") when none is kept.

        ROUGE-L F1 is 2 LCS / (|a| + |b|), and the LCS is at most the number of words the two share
        (with repeats), so a kept text whose bound cannot beat the best so far is skipped."""
        a = rouge_tokens(text)
        counts = Counter(a)
        best, best_text = 0.0, ""
        for tokens, kept_counts, kept in zip(self.tokens, self._counts, self.texts):
            if not tokens or not a:
                continue
            shared = sum((counts & kept_counts).values())
            if 2 * shared / (len(a) + len(tokens)) <= best:
                continue
            score = rouge_l_tokens(a, tokens)
            if score > best:
                best, best_text = score, kept
        return best, best_text


def shingles(text: str, n: int = 3) -> set[str]:
    """Word n-grams of the lower-cased text (the whole text when it is shorter than n words)."""
    words = rouge_tokens(text)
    if len(words) < n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def near_duplicate_pairs(texts: Sequence[str], threshold: float = 0.8, num_perm: int = 128, ngram: int = 3,
                         seed: int = 1) -> list[tuple[int, int, float]]:
    """(i, j, Jaccard) for i < j whose word-`ngram` shingle sets have Jaccard similarity >= threshold:
    candidates from MinHash LSH (datasketch), each confirmed on the exact sets. Identical texts are
    pairs too (Jaccard 1.0); empty texts are skipped."""
    from datasketch import MinHash, MinHashLSH

    sets = [shingles(t, ngram) for t in texts]
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    pairs: set[tuple[int, int]] = set()
    for i, s in enumerate(sets):
        if not s:
            continue
        m = MinHash(num_perm=num_perm, seed=seed)
        m.update_batch([x.encode("utf-8") for x in s])
        for j in lsh.query(m):
            pairs.add((j, i))
        lsh.insert(i, m)
    out = [(i, j, jaccard(sets[i], sets[j])) for i, j in sorted(pairs)]
    return [(i, j, s) for i, j, s in out if s >= threshold]
