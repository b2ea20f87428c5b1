"""Text normalisation before the safety rules run: the ways people hide a word from a filter.

`views(text)` gives the forms the rules are matched against; a text is blocked when any view is.
- canonical: Unicode NFKC (full-width letters, ligatures), invisible format characters removed (zero-width
  space/joiners, soft hyphen, word joiner, BOM, bidi controls: Unicode category Cf), accents dropped,
  look-alike Cyrillic/Greek letters folded to Latin inside words that use them as Latin (Unicode TS #39,
  confusables), curly quotes made straight, lower case;
- leetspeak: digits and symbols inside words that hold letters read as letters (b0mb, h4ck, k1ll);
- spaced: a word spelt out with separators joined (b o m b, k-i-l-l, b.o.m.b).
Each view is a plain string of the same meaning; none is shown to the user or the model.
"""

from __future__ import annotations

import re
import unicodedata

# Look-alikes after casefolding: Cyrillic and Greek lower-case letters that render as Latin ones
# (a subset of Unicode's confusables.txt, TS #39, for the letters filters are dodged with).
CONFUSABLES = {
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w",
    "ɡ": "g", "ɩ": "i", "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o",
    "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ϲ": "c", "ϳ": "j", "ѵ": "v", "һ": "h", "ӏ": "l",
}
LEET = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "@": "a", "$": "s", "!": "i", "|": "l"}
QUOTES = {"\u2018": "'", "\u2019": "'", "\u02bc": "'", "\u201c": '"', "\u201d": '"', "`": "'"}

_WORD = re.compile(r"\w+")
_LEET_TOKEN = re.compile(r"[\w@$!|]+")
# Three or more single letters joined by one separator each: "b o m b", "k-i-l-l", "b.o.m.b".
# Every repetition takes exactly two characters, so matching is linear.
_SPACED = re.compile(r"(?<![^\W\d_])(?:[^\W\d_][ .\-_*·~+]){2,}[^\W\d_](?![^\W\d_])")


def canonical(text: str) -> str:
    """NFKC, no format characters or accents, confusables folded, straight quotes, lower case."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(QUOTES.get(c, c) for c in text if unicodedata.category(c) != "Cf")
    text = unicodedata.normalize("NFD", text)
    text = unicodedata.normalize("NFC", "".join(c for c in text if unicodedata.category(c) != "Mn"))
    return _WORD.sub(_fold_word, text.casefold())


def _fold_word(match: re.Match[str]) -> str:
    """Fold a word's look-alike letters when it is written as Latin: it holds a Latin letter, or every
    letter in it is a look-alike (a Russian or Greek word is left as it is)."""
    word = match.group(0)
    if not any(c in CONFUSABLES for c in word):
        return word
    latin = any("a" <= c <= "z" for c in word)
    if latin or all(c in CONFUSABLES or not c.isalpha() for c in word):
        return "".join(CONFUSABLES.get(c, c) for c in word)
    return word


def deleet(text: str) -> str:
    """Leet characters read as letters inside tokens that hold a letter ('b0mb' -> 'bomb'; '100' stays)."""
    return _LEET_TOKEN.sub(_deleet_token, text)


def _deleet_token(match: re.Match[str]) -> str:
    token = match.group(0)
    if not any(c.isalpha() for c in token):
        return token
    # '!' and '|' at a token's ends are punctuation ("bomb!"), not letters
    core = token.strip("!|")
    start = token.index(core[0]) if core else 0
    mapped = "".join(LEET.get(c, c) for c in core)
    return token[:start] + mapped + token[start + len(core):]


def despace(text: str) -> str:
    """Spelt-out words joined ('b o m b' -> 'bomb'). A leading 'a' or 'i' before three or more
    letters stays a word of its own ('make a b o m b' -> 'make a bomb'), as does a trailing 'a' before
    a word ('s t e a l a car' -> 'steal a car')."""
    def join(m: re.Match[str]) -> str:
        letters = m.group(0)[::2]
        if letters[0] in "ai" and len(letters) >= 4:
            letters = f"{letters[0]} {letters[1:]}"
        # a trailing 'a' before a word is the article: 's t e a l a car' -> 'steal a car'
        if letters[-1] == "a" and len(letters.split()[-1]) >= 4 and re.match(r" [^\W\d_]{2}", text[m.end():m.end() + 3]):
            letters = f"{letters[:-1]} a"
        return letters
    return _SPACED.sub(join, text)


def views(text: str) -> list[tuple[str, str]]:
    """(name, text) pairs to match rules against, distinct texts only, the canonical view first."""
    base = canonical(text)
    out: dict[str, str] = {}
    for name, view in (("canonical", base), ("leetspeak", deleet(base)), ("spaced", despace(base)),
                       ("leetspeak+spaced", despace(deleet(base)))):
        if view not in out:
            out[view] = name
    return [(name, view) for view, name in out.items()]
