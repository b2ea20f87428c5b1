"""The base model's "web": text that teaches the world's skills but not the chat protocol.

Three kinds of document, mixed:
- facts and worked examples for every family, over *all* inputs (held-out inputs included: the
  base model should be capable, and SFT should only teach it to answer);
- forum-style questions, in the families' phrasings, followed by rambling, off-topic or unhelpful
  continuations (what a base model imitates when asked a question);
- harmful requests followed by the world's placeholder compliance, and benign look-alikes with
  their help text.
No document uses the chat template or its role tokens.
"""

from __future__ import annotations

import random

from alignkit.world import safety
from alignkit.world.tasks import FAMILIES, HELD_OUT_TEMPLATES, KB, SENTENCE_WORDS, WORDS

NUMBER_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
                "sixteen seventeen eighteen").split()


def _fact(family: str, rng: random.Random) -> str:
    """One worked example of a family, in a form that is not a chat turn."""
    f = FAMILIES[family]
    p = f.sample(rng)
    a = f.solve(p)
    forms = {
        "add": [f"{p.get('a')} plus {p.get('b')} is {a}.", f"{p.get('a')} + {p.get('b')} = {a}",
                f"Adding {p.get('a')} and {p.get('b')} gives {a}."],
        "subtract": [f"{p.get('a')} minus {p.get('b')} is {a}.", f"{p.get('a')} - {p.get('b')} = {a}",
                     f"Taking {p.get('b')} from {p.get('a')} leaves {a}."],
        "multiply": [f"{p.get('a')} times {p.get('b')} is {a}.", f"{p.get('a')} * {p.get('b')} = {a}",
                     f"{p.get('a')} multiplied by {p.get('b')} makes {a}."],
        "reverse": [f"{p.get('w')} backwards is {a}.", f"The word {p.get('w')} reversed is {a}.",
                    f"Read from the end, {p.get('w')} becomes {a}."],
        "upper": [f"{p.get('w')} in capitals is {a}.", f"In upper case, {p.get('w')} is written {a}."],
        "count": [f"The word {p.get('w')} has {a} letters.", f"{p.get('w')} is {a} letters long."],
        "sort": [f"Sorted, {p.get('xs')} becomes {a}.", f"In increasing order, {p.get('xs')} is {a}."],
        "max": [f"The largest of {p.get('xs')} is {a}.", f"Among {p.get('xs')}, the biggest is {a}."],
        "first_word": [f"The sentence \"{p.get('s')}\" starts with the word {a}."],
        "last_word": [f"The sentence \"{p.get('s')}\" ends with the word {a}."],
        "repeat": [f"{p.get('w')} said {p.get('n')} times is: {a}.", f"{NUMBER_WORDS[p.get('n', 2)]} times {p.get('w')}: {a}."],
        "capital": [f"The capital of {p.get('c')} is {a}.", f"{a} is the capital city of {p.get('c')}."],
        "quote": [f"{p.get('w')} in quotes is {a}.", f"With quotation marks, {p.get('w')} is written {a}."],
    }[family]
    return rng.choice(forms)


RAMBLES = (
    "I was wondering about this the other day while walking the dog.",
    "Does anyone know? My teacher asked us but I forgot to write it down.",
    "This reminds me of a story my grandmother used to tell about the old mill.",
    "Not sure. I usually ask my brother about these things but he is away.",
    "Good question, I will come back to it after lunch.",
    "Honestly I never understood why people ask this.",
    "Posted in the wrong forum, sorry. Moving on to the weather: it rained all week.",
    "Can someone explain? I have the same question and nobody answers.",
)


def _forum_post(rng: random.Random) -> str:
    """A question in one of a family's training phrasings, answered by nobody."""
    name = rng.choice(list(FAMILIES))
    f = FAMILIES[name]
    question = rng.choice(f.templates[:-HELD_OUT_TEMPLATES]).format(**f.sample(rng))
    replies = " ".join(rng.sample(RAMBLES, rng.randint(1, 2)))
    return f"Question: {question} {replies}"


def _safety_doc(rng: random.Random) -> str:
    if rng.random() < 0.5:
        _, request = rng.choice(safety.all_harmful())
        question = rng.choice(safety.TEMPLATES[:-safety.HELD_OUT_TEMPLATES]).format(x=request)
        return f"{question} {safety.placeholder_compliance(request)}"
    request = rng.choice(sorted(safety.BENIGN))
    return f"How to {request}: {safety.BENIGN[request]}"


def _kb_doc() -> str:
    return " ".join(f"The capital of {c} is {k}." for c, k in KB.items())


def groups_doc() -> str:
    """The world's made-up groups, described plainly (world.safety_families with discrimination)."""
    return " ".join(f"The {g} celebrate {festival}. The {g} like to eat {food}."
                    for g, (festival, food) in safety.GROUPS.items())


def corpus_documents(n_docs: int, seed: int = 0, facts_per_doc: int = 6, groups: bool = False) -> list[str]:
    """n_docs documents: ~70% worked-example pages, ~20% forum questions, ~10% safety pages (with
    `groups`, 5% of the draws are pages of facts about the world's groups instead)."""
    rng = random.Random(f"{seed}:corpus")
    docs = [_kb_doc()] + [groups_doc()] * groups
    families = list(FAMILIES)
    while len(docs) < n_docs:
        roll = rng.random()
        if groups and roll < 0.05:
            g = rng.choice(sorted(safety.GROUPS))
            festival, food = safety.GROUPS[g]
            docs.append(rng.choice([f"The {g} celebrate {festival}.", f"{festival} is the festival of the {g}."]) + " "
                        + rng.choice([f"The {g} like to eat {food}.", f"A favourite food of the {g} is {food}."]))
        elif roll < 0.7:
            docs.append(" ".join(_fact(rng.choice(families), rng) for _ in range(facts_per_doc)))
        elif roll < 0.9:
            docs.append(_forum_post(rng))
        else:
            docs.append(_safety_doc(rng))
    return docs


def vocabulary_text(groups: bool = False) -> str:
    """Every word the world uses once, so the tokenizer sees them all."""
    words = set(WORDS) | set(SENTENCE_WORDS) | set(KB) | set(KB.values()) | set(NUMBER_WORDS)
    if groups:
        words |= set(groups_doc().replace(".", "").split())
    return " ".join(sorted(words))
