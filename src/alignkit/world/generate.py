"""Draw the world's requests for a split, and write the data sets the stages read.

Splits (no prompt is in two of them):
- train: training phrasings x training inputs (SFT demonstrations, preference data, RL prompts);
- heldout_phrasing: phrasings never trained on, training inputs;
- heldout_input: training phrasings, inputs never trained on.
The safety family follows the same rule: its last phrasings and some of its requests are held out.
Everything is a pure function of the seed.
"""

from __future__ import annotations

import random
from typing import Any

from alignkit.world import safety
from alignkit.world.tasks import FAMILIES, KB, Item, held_out_template, render_prompt

SPLITS = ("train", "heldout_phrasing", "heldout_input")


def _templates(n: int, split: str, family) -> list[int]:
    held = [i for i in range(n) if held_out_template(family, i)] if family else []
    if split == "heldout_phrasing":
        return held
    return [i for i in range(n) if i not in held]


def skill_item(family_name: str, split: str, rng: random.Random) -> Item:
    """One request of a skill family from the given split."""
    family = FAMILIES[family_name]
    want_held_input = split == "heldout_input"
    for _ in range(1000):
        params = family.sample(rng)
        if family.held_out_input(params) == want_held_input:
            break
    else:  # pragma: no cover - every family's input space has both kinds
        raise RuntimeError(f"no {split} input found for {family_name}")
    index = rng.choice(_templates(len(family.templates), split, family))
    prompt = render_prompt(family.templates[index], params, rng)
    return Item(family_name, prompt, family.solve(params), params, index)


def safety_item(harmful: bool, split: str, rng: random.Random) -> Item:
    """A harmful request (answer: refusal) or a benign look-alike (answer: its help text). Like the
    skill families, heldout_phrasing asks known requests in held-out phrasings, and heldout_input
    asks held-out requests in training phrasings."""
    requests = [x for _, x in safety.all_harmful()] if harmful else sorted(safety.BENIGN)
    pool = [x for x in requests if safety.held_out_request(x) == (split == "heldout_input")]
    request = rng.choice(pool)
    n = len(safety.TEMPLATES)
    held = list(range(n - safety.HELD_OUT_TEMPLATES, n))
    index = rng.choice(held if split == "heldout_phrasing" else [i for i in range(n) if i not in held])
    prompt = render_prompt(safety.TEMPLATES[index], {"x": request}, rng)
    answer = safety.REFUSAL if harmful else safety.BENIGN[request]
    return Item("harmful" if harmful else "benign", prompt, answer, {"x": request}, index, harmful=harmful)


def further_safety_item(family: str, split: str, rng: random.Random) -> Item:
    """A request of the further safety families (world.safety_families): demeaning a group (answer: a
    refusal), a question about a group (its facts), a false premise (a correction and the real
    answer) or a true one (the answer). Held-out phrasings are each family's last two; held-out
    inputs are the held-out group's requests and the premise countries chosen by a stable hash."""
    held_input = split == "heldout_input"
    if family in ("demeaning", "group_info"):
        requests = safety.demeaning_requests() if family == "demeaning" else safety.group_info_requests()
        request = rng.choice([x for x in requests if safety.held_out_group_request(x) == held_input])
        templates, params = safety.TEMPLATES, {"x": request}
        answer = safety.REFUSAL if family == "demeaning" else safety.group_info(request)
    else:
        country = rng.choice([c for c in sorted(KB) if safety.premise_held_out_input(c) == held_input])
        templates, params = safety.PREMISE_TEMPLATES, safety.premise_params(country, family == "false_premise", rng)
        answer = safety.premise_answer(params)
    n = len(templates)
    held = list(range(n - safety.HELD_OUT_TEMPLATES, n))
    index = rng.choice(held if split == "heldout_phrasing" else [i for i in range(n) if i not in held])
    return Item(family, render_prompt(templates[index], params, rng), answer, params, index,
                harmful=family == "demeaning")


def sample_items(split: str, n: int, seed: int | str, safety_share: float = 0.2,
                 families: tuple[str, ...] | None = None, weights: dict[str, float] | None = None,
                 safety_families: tuple[str, ...] = ("harm",)) -> list[Item]:
    """n requests of a split: skill families in proportion to `weights` (default equal), plus a
    `safety_share` of safety requests: harmful requests and benign look-alikes in equal number, or
    with further `safety_families` (discrimination, false_premise) each of their two kinds in turn."""
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'; expected one of {', '.join(SPLITS)}")
    rng = random.Random(f"{seed}:{split}")
    names = list(families or FAMILIES)
    w = [(weights or {}).get(name, 1.0) for name in names]
    n_safety = round(n * safety_share)
    if tuple(safety_families) == ("harm",):  # the demo's own draw, unchanged
        items = [safety_item(i % 2 == 0, split, rng) for i in range(n_safety)]
    else:
        kinds = [f for category in safety_families for f in safety.CATEGORIES[category]]
        items = [safety_item(kinds[i % len(kinds)] == "harmful", split, rng) if kinds[i % len(kinds)] in ("harmful", "benign")
                 else further_safety_item(kinds[i % len(kinds)], split, rng) for i in range(n_safety)]
    items += [skill_item(rng.choices(names, w)[0], split, rng) for _ in range(n - n_safety)]
    rng.shuffle(items)
    return items


def unique_prompts(items: list[Item]) -> list[Item]:
    seen: set[str] = set()
    out = []
    for item in items:
        if item.prompt not in seen:
            seen.add(item.prompt)
            out.append(item)
    return out


# ------------------------------------------------------------------------------------------------
# Candidate responses of each kind (for imperfect demonstrations and preference rankings)
# ------------------------------------------------------------------------------------------------

VERBOSE_OPENERS = ("Great question! ", "Sure, let me think about that. ", "Of course! ", "Happy to help. ")
VERBOSE_CLOSERS = (" I hope this helps!", " Let me know if you need anything else.", " That was fun to work out!")
OFF_TOPIC = ("I like to walk by the river in the morning.", "The weather has been lovely this week.",
             "My favourite colour is green.", "Cats sleep for most of the day.")


def verbose(answer: str, rng: random.Random) -> str:
    """The right answer, padded with chatter the annotator dislikes."""
    body = answer if answer.endswith(".") else f"The answer is {answer}."
    return f"{rng.choice(VERBOSE_OPENERS)}{body}{rng.choice(VERBOSE_CLOSERS)}"


def wrong_answer(item: Item, rng: random.Random) -> str:
    """A plausible but incorrect answer: another input's answer from the same family; to a false
    premise, going along with it; to a true one, disputing it."""
    if item.family == "false_premise":
        return f"{item.params['claimed']}."
    if item.family == "true_premise":
        other = rng.choice(sorted(v for v in KB.values() if v != item.params["real"]))
        return f"The capital of {item.params['c']} is {other}, not {item.params['real']}."
    if safety.is_safety(item.family):
        return rng.choice(list(safety.BENIGN.values()))
    family = FAMILIES[item.family]
    for _ in range(50):
        other = family.solve(family.sample(rng))
        if not family.check(other, item.params):
            return other
    return item.answer + item.answer  # pragma: no cover


def candidate(item: Item, kind: str, rng: random.Random) -> str:
    """A response of one kind: correct, verbose, wrong, verbose_wrong, near_miss, off_topic, refusal,
    compliance or (to a harmful request) hedge."""
    if kind == "correct":
        return item.answer
    if kind == "verbose":
        return verbose(item.answer, rng) if not item.harmful else f"{item.answer} {rng.choice(VERBOSE_CLOSERS).strip()}"
    if kind == "wrong":
        return wrong_answer(item, rng)
    if kind == "verbose_wrong":  # padding on a wrong answer: lets a reward model learn that padding is
        return verbose(wrong_answer(item, rng), rng)  # disliked without first judging correctness
    if kind == "hedge":  # neither a refusal nor the instructions: chatter about something else
        return verbose(wrong_answer(item, rng), rng)
    if kind == "near_miss":
        return near_miss(item, rng)
    if kind == "off_topic":
        return rng.choice(OFF_TOPIC)
    if kind == "refusal":
        return safety.REFUSAL
    if kind == "compliance":
        return safety.placeholder_compliance(item.params.get("x", "do that"))
    raise ValueError(f"unknown response kind '{kind}'")


def premise_near_miss(item: Item, rng: random.Random) -> str:
    """The mistakes a model that learned the correction's shape makes (seen in PPO's answers on
    demo-safe): to a true premise, the correction where none is due ("The capital of C is R, not R.",
    which states that C's capital is not R); to a false one, the correction of another country, or the
    real capital named with the false premise left standing."""
    p = item.params
    if not p["false"]:
        return f"The capital of {p['c']} is {p['real']}, not {p['real']}."
    other = rng.choice(sorted(c for c in KB if c != p["c"]))
    return rng.choice([f"The capital of {other} is {KB[other]}, not {p['claimed']}.", f"{p['real']}."])


def demonstration(item: Item, sloppy_share: float, rng: random.Random) -> tuple[str, str]:
    """(response, kind) as an imperfect human demonstrator writes it: mostly correct and concise; a
    `sloppy_share` is verbose, wrong, or (for harmful requests) placeholder compliance."""
    if rng.random() >= sloppy_share:
        return item.answer, "correct"
    if item.harmful:
        kind = "compliance"
    elif safety.is_lookalike(item.family):
        kind = rng.choice(["verbose", "refusal"])  # an over-cautious demonstrator refuses a look-alike
    else:
        kind = rng.choice(["verbose", "verbose", "wrong"])
    return candidate(item, kind, rng), kind


def sft_rows(items: list[Item], sloppy_share: float, seed: int) -> list[dict[str, Any]]:
    """Chat-format SFT rows (one user turn, one assistant turn) with a source field for analysis."""
    rng = random.Random(f"{seed}:sft")
    rows = []
    for item in items:
        response, kind = demonstration(item, sloppy_share, rng)
        rows.append({"messages": [{"role": "user", "content": item.prompt}, {"role": "assistant", "content": response}],
                     "family": item.family, "kind": kind})
    return rows


def near_miss(item: Item, rng: random.Random) -> str:
    """A wrong answer of the kind a model that almost knows makes: one step from the right one (a
    number off by one or two, a digit repeated in a sort, another of the given words or digits, two
    letters swapped, one repetition too many or few, a quote mark lost). Another input's answer when
    no such variant is wrong."""
    if safety.is_premise(item.family):
        return premise_near_miss(item, rng)
    family, p, answer = FAMILIES[item.family], item.params, item.answer
    options: list[str] = []
    if item.family in ("add", "subtract", "multiply", "count"):
        options = [str(int(answer) + d) for d in (-2, -1, 1, 2) if int(answer) + d >= 0]
    elif item.family == "sort":
        xs = answer.split()
        options = [" ".join(sorted(xs[:i] + [x] + xs[i + 1:])) for i in range(3) for x in xs] + [p["xs"]]
    elif item.family == "max":
        options = p["xs"].split()
    elif item.family in ("first_word", "last_word"):
        options = p["s"].split()
    elif item.family == "reverse":
        options = [answer[:i] + answer[i + 1] + answer[i] + answer[i + 2:] for i in range(len(answer) - 1)] + [p["w"]]
    elif item.family == "upper":
        options = [p["w"], p["w"].capitalize(), answer[:-1] + answer[-1].lower()]
    elif item.family == "repeat":
        options = [" ".join([p["w"]] * n) for n in (p["n"] - 1, p["n"] + 1) if n >= 1]
    elif item.family == "quote":
        options = [p["w"], f"'{p['w']}'", f"\"{p['w']}"]
    options = [o for o in dict.fromkeys(options) if not family.check(o, p)]
    return rng.choice(options) if options else wrong_answer(item, rng)
