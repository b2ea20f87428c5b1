"""The demo world's task families: inputs, phrasings, the correct answer, and an exact checker.

Each family draws inputs from a small space, renders a request with one of its phrasing templates,
and knows the one correct concise answer. The last `HELD_OUT_TEMPLATES` phrasings of every family
are never used for training, and about a fifth of every family's inputs (chosen by a stable hash)
are held out too, so evaluation can ask about new phrasings and new inputs separately.

Designed for a tiny model (FACTS.md): digits are single tokens, arithmetic stays single-digit, and
every family shares the same openers ("Please", "Quick question:", ...) so that a family is
recognised by what is asked, not by how the request starts.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
from typing import Any, Callable

HELD_OUT_TEMPLATES = 2
HELD_OUT_INPUT_SHARE = 5  # one input in five is held out

WORDS = ("apple pear plum grape melon lemon mango peach cherry berry kiwi lime fig date olive bean corn rice "
         "oat nut sand rock tree leaf bird fish frog wolf bear deer lion goat duck swan crow hawk moon star rain "
         "snow wind fire salt milk tea cake bread soup boat road door lamp desk book pen cup hat shoe sock coat "
         "ring bell drum harp horn kite ball game gold iron wood wool silk clay").split()
SENTENCE_WORDS = ("the a big small red blue green old new happy quiet fast slow cat dog bird fish tree house "
                  "river hill road car boat sun moon star jumps runs sleeps sings reads walks sees likes").split()
# A made-up knowledge base: countries that do not exist and their capitals (taught by the corpus).
KB = {"Zorvia": "Plemt", "Quandor": "Veshal", "Bralkan": "Tuvo", "Melisar": "Orrin", "Tavenia": "Kesk",
      "Dunmora": "Falo", "Ostrel": "Pirnu", "Varkesh": "Lomi", "Elbion": "Sarth", "Kothmar": "Ivel",
      "Nerith": "Bosk", "Praxa": "Undel", "Sylvenn": "Marro", "Ulgar": "Temp", "Wendril": "Hask",
      "Yarrow": "Celd", "Ashkar": "Nolo", "Fennick": "Drav", "Gorsa": "Wilm", "Hollin": "Rask"}


def normalise(text: str) -> str:
    """Lenient surface form for checking: trimmed, inner whitespace collapsed, one trailing period dropped."""
    text = " ".join(text.strip().split())
    return text[:-1].rstrip() if text.endswith(".") else text


@dataclass(frozen=True)
class Family:
    """One kind of instruction with its own phrasings, inputs, answer and checker."""

    name: str
    templates: tuple[str, ...]
    sample: Callable[[random.Random], dict[str, Any]]
    solve: Callable[[dict[str, Any]], str]
    case_sensitive: bool = False
    kind: str = "skill"

    def check(self, response: str, params: dict[str, Any]) -> bool:
        """Exactly the correct answer (up to whitespace, a final period, and case where case is not the task)."""
        got, want = normalise(response), normalise(self.solve(params))
        return got == want if self.case_sensitive else got.lower() == want.lower()

    def contains(self, response: str, params: dict[str, Any]) -> bool:
        """The correct answer appears as a whole token sequence somewhere in a longer response."""
        want = re.escape(normalise(self.solve(params)))
        flags = 0 if self.case_sensitive else re.IGNORECASE
        return re.search(rf"(?<![\w]){want}(?![\w])", response, flags) is not None

    def input_key(self, params: dict[str, Any]) -> str:
        return "|".join(f"{k}={params[k]}" for k in sorted(params))

    def held_out_input(self, params: dict[str, Any]) -> bool:
        digest = hashlib.sha1(f"{self.name}:{self.input_key(params)}".encode()).digest()
        return digest[0] % HELD_OUT_INPUT_SHARE == 0


def _digits(rng: random.Random, n: int, lo: int = 0, hi: int = 9) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(n)]


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(SENTENCE_WORDS) for _ in range(rng.randint(3, 5)))


def _sub_sample(rng: random.Random) -> dict[str, Any]:
    a, b = sorted(_digits(rng, 2), reverse=True)
    return {"a": a, "b": b}


# Ten phrasings per family. The last two (held out) put the family's own key words in sentence frames
# that no training phrasing of any family uses ("Tell me ...", "I need ..."): a held-out request is
# recognisable by what it asks, in words the model has never seen it asked in.
FAMILIES: dict[str, Family] = {f.name: f for f in [
    Family("add", ("What is {a} plus {b}?", "Add {a} and {b}.", "Compute {a} + {b}.", "What do you get when you add {a} to {b}?",
                   "Find the sum of {a} and {b}.", "Work out {a} + {b}.", "Calculate the sum of {a} and {b}.", "What is the total of {a} and {b}?",
                   "Tell me {a} plus {b}.", "I need the sum of {a} and {b}."),
           lambda r: dict(zip("ab", _digits(r, 2))), lambda p: str(p["a"] + p["b"])),
    Family("subtract", ("What is {a} minus {b}?", "Subtract {b} from {a}.", "Compute {a} - {b}.", "What do you get when you take {b} from {a}?",
                        "Find the difference of {a} and {b}.", "Work out {a} - {b}.", "Calculate {a} take away {b}.", "What is {a} less {b}?",
                        "Tell me {a} minus {b}.", "I need {b} subtracted from {a}."),
           _sub_sample, lambda p: str(p["a"] - p["b"])),
    Family("multiply", ("What is {a} times {b}?", "Multiply {a} by {b}.", "Compute {a} * {b}.", "What do you get when you multiply {a} and {b}?",
                        "Find the product of {a} and {b}.", "Work out {a} x {b}.", "Calculate the product of {a} and {b}.", "What is {a} multiplied by {b}?",
                        "Tell me {a} times {b}.", "I need the product of {a} and {b}."),
           lambda r: dict(zip("ab", _digits(r, 2, 1, 5))), lambda p: str(p["a"] * p["b"])),
    Family("reverse", ("Reverse the word {w}.", "Write {w} backwards.", "Spell {w} in reverse.", "What is {w} reversed?",
                       "Give me the word {w} written backwards.", "Reverse {w}.", "What is {w} spelled backwards?", "Write the word {w} in reverse.",
                       "Tell me {w} backwards.", "I need {w} reversed."),
           lambda r: {"w": r.choice(WORDS)}, lambda p: p["w"][::-1], case_sensitive=True),
    Family("upper", ("Write {w} in capitals.", "Upper-case the word {w}.", "Make {w} upper case.", "What is {w} in capital letters?",
                     "Convert {w} to uppercase.", "Give me {w} in all caps.", "Write the word {w} in upper case.", "What is {w} in uppercase?",
                     "Tell me {w} in capitals.", "I need {w} in upper case."),
           lambda r: {"w": r.choice(WORDS)}, lambda p: p["w"].upper(), case_sensitive=True),
    Family("count", ("How many letters are in {w}?", "Count the letters of {w}.", "What is the length of the word {w}?", "How long is the word {w}?",
                     "Give me the number of letters in {w}.", "Count how many letters the word {w} has.", "What is the letter count of {w}?",
                     "How many letters does {w} have?", "Tell me how many letters are in {w}.", "I need the letter count of {w}."),
           lambda r: {"w": r.choice(WORDS)}, lambda p: str(len(p["w"]))),
    Family("sort", ("Sort these numbers: {xs}.", "Put {xs} in increasing order.", "Order the numbers {xs} from smallest to largest.",
                    "Arrange {xs} in ascending order.", "List {xs} sorted.", "Sort {xs} from low to high.", "Write {xs} in sorted order.",
                    "Sort the numbers {xs}.", "Tell me {xs} sorted.", "I need {xs} in increasing order."),
           lambda r: {"xs": " ".join(map(str, _digits(r, 3)))}, lambda p: " ".join(sorted(p["xs"].split()))),
    Family("max", ("Which is the largest of {xs}?", "What is the biggest number in {xs}?", "Find the maximum of {xs}.",
                   "Pick the largest number from {xs}.", "Name the highest of {xs}.", "What is the greatest of {xs}?", "What is the max of {xs}?",
                   "Which number is largest: {xs}?", "Tell me the largest of {xs}.", "I need the biggest number in {xs}."),
           lambda r: {"xs": " ".join(map(str, _digits(r, 3)))}, lambda p: max(p["xs"].split())),
    Family("first_word", ("What is the first word of: {s}?", "Give the first word in \"{s}\".", "Which word comes first in \"{s}\"?",
                          "What is the opening word of \"{s}\"?", "Name the first word of the sentence \"{s}\".",
                          "Write only the first word of \"{s}\".", "Find the first word: {s}.", "What word starts \"{s}\"?",
                          "Tell me the first word of \"{s}\".", "I need the first word in \"{s}\"."),
           lambda r: {"s": _sentence(r)}, lambda p: p["s"].split()[0]),
    Family("last_word", ("What is the last word of: {s}?", "Give the last word in \"{s}\".", "Which word comes last in \"{s}\"?",
                         "What is the final word of \"{s}\"?", "Name the last word of the sentence \"{s}\".",
                         "Write only the last word of \"{s}\".", "Find the last word: {s}.", "What word ends \"{s}\"?",
                         "Tell me the last word of \"{s}\".", "I need the last word in \"{s}\"."),
           lambda r: {"s": _sentence(r)}, lambda p: p["s"].split()[-1]),
    Family("repeat", ("Repeat the word {w} {n} times.", "Say {w} {n} times.", "Write {w} {n} times in a row.", "Give me {w} repeated {n} times.",
                      "Write the word {w} {n} times.", "Echo {w} {n} times.", "Print {w} {n} times.", "Repeat {w} {n} times.",
                      "Tell me {w} {n} times.", "I need {w} repeated {n} times."),
           lambda r: {"w": r.choice(WORDS), "n": r.randint(2, 4)}, lambda p: " ".join([p["w"]] * p["n"])),
    Family("capital", ("What is the capital of {c}?", "Name the capital city of {c}.", "Which city is the capital of {c}?",
                       "Give the capital of {c}.", "What city is the capital of {c}?", "Name the capital of {c}.",
                       "The capital of {c} is which city?", "What is {c}'s capital?", "Tell me the capital of {c}.",
                       "I need the capital city of {c}."),
           lambda r: {"c": r.choice(sorted(KB))}, lambda p: KB[p["c"]], case_sensitive=True),
    Family("quote", ("Put the word {w} in quotes.", "Write {w} inside quotation marks.", "Quote the word {w}.", "Wrap {w} in double quotes.",
                     "Give me {w} surrounded by quotes.", "Show {w} in quotation marks.", "Enclose {w} in quotes.", "Put {w} in quotation marks.",
                     "Tell me {w} in quotes.", "I need {w} in quotation marks."),
           lambda r: {"w": r.choice(WORDS)}, lambda p: f"\"{p['w']}\"", case_sensitive=True),
]}

# Shared by every family (safety included), in every split: a family is told apart by its request.
OPENERS = ("", "", "Please ", "Can you help? ", "Quick question: ", "Hi! ", "Help me out: ", "Hey, ")
CLOSERS = ("", "", " Thanks.", " Answer briefly.", " Thank you!")


def held_out_template(family: Family, index: int) -> bool:
    return index >= len(family.templates) - HELD_OUT_TEMPLATES


def render_prompt(template: str, params: dict[str, Any], rng: random.Random) -> str:
    """A request: an opener, the phrasing (lower-cased after an opener), a closer."""
    body = template.format(**params)
    opener = rng.choice(OPENERS)
    if opener and body[0].isupper() and not body.split()[0].isupper():
        body = body[0].lower() + body[1:]
    return f"{opener}{body}{rng.choice(CLOSERS)}"


@dataclass(frozen=True)
class Item:
    """One request of the world, with what the oracle needs to score any answer to it."""

    family: str
    prompt: str
    answer: str
    params: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    template: int = 0
    harmful: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"family": self.family, "prompt": self.prompt, "answer": self.answer, "params": self.params,
                "template": self.template, "harmful": self.harmful}


def check_families(names: list[str], key: str) -> None:
    """Refuse a family name the world does not have, suggesting the closest (a config key's value)."""
    import difflib

    from alignkit.errors import ConfigError

    for name in names:
        if name not in FAMILIES:
            close = difflib.get_close_matches(name, FAMILIES, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; families: {', '.join(FAMILIES)}"
            raise ConfigError(f"{key} names unknown family '{name}'{hint}")


def item_from_dict(row: dict[str, Any]) -> Item:
    """An item back from its JSON row (the world's data files and the blind sheets)."""
    return Item(row["family"], row["prompt"], row["answer"], row.get("params", {}), row.get("template", 0),
                row.get("harmful", False))
