"""Reward-model data: preference files -> rankings -> train/eval split by prompt -> tokenised pairs.

All rankings of a prompt go to the same split, so no prompt's responses are compared in training and
judged in evaluation. Each side of a pair is the whole conversation (chat template applied, EOS
ensured at the end, since the score is read at the last token). A sequence longer than max_length
loses the start of its prompt, not the end of its response; a response that alone exceeds it is
dropped and counted.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, NamedTuple

from alignkit.data.preferences import Dropped, Pair, Ranking, rankings_to_pairs, to_ranking
from alignkit.data.quality import DataReport
from alignkit.data.records import read_records
from alignkit.data.templates import render
from alignkit.data.tokenize import needs_eos


@dataclass
class RewardPair:
    chosen_ids: list[int]
    rejected_ids: list[int]
    margin: float | None
    source: str
    where: str
    chosen_start: int = 0
    """Index of the chosen response's first token in chosen_ids (the prompt comes before it)."""
    rejected_start: int = 0
    """Index of the rejected response's first token in rejected_ids."""
    group: int = -1
    """Index of the ranking the pair comes from, within its split (pairs of one ranking share responses)."""


def conversation_ids(tokenizer: Any, prompt: tuple, response: str, max_length: int) -> list[int] | None:
    """Token ids of prompt + response with EOS last, cut from the left to max_length; None when the
    response alone does not fit."""
    found = conversation_with_start(tokenizer, prompt, response, max_length)
    return None if found is None else found[0]


class Conversation(NamedTuple):
    ids: list[int]
    start: int
    """Index of the response's first token in ids."""
    cut: int
    """Prompt tokens dropped from the left to fit max_length."""


def conversation_with_start(tokenizer: Any, prompt: tuple, response: str, max_length: int) -> Conversation | None:
    """(ids, start, cut): conversation_ids, the index of the response's first token in them, and how
    many prompt tokens were cut; None when the response does not fit with at least one prompt token
    before it (its first token must have a position that predicts it).

    The start is the length of the token prefix shared with the prompt rendered with its generation
    prompt, so a tokenizer that merges across the boundary still gives a start inside the text's own
    tokens (the merged token counts as response)."""
    text = render(tokenizer, [*prompt, {"role": "assistant", "content": response}])
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if needs_eos(tokenizer, text, ids):
        ids.append(tokenizer.eos_token_id)
    prompt_ids = tokenizer(render(tokenizer, list(prompt), add_generation_prompt=True),
                           add_special_tokens=False)["input_ids"]
    start = 0
    while start < min(len(prompt_ids), len(ids) - 1) and prompt_ids[start] == ids[start]:
        start += 1
    if len(ids) <= max_length:
        return Conversation(ids, start, 0)
    if len(ids) - start >= max_length:
        return None
    cut = len(ids) - max_length
    return Conversation(ids[cut:], start - cut, cut)


def split_rankings(rankings: list[Ranking], eval_fraction: float, seed: int) -> tuple[list[Ranking], list[Ranking]]:
    """Whole prompts to train or eval (seeded): every ranking of a prompt goes to the same side, so
    neither a pair nor a prompt leaks across the split, also when a file repeats a prompt over rows
    (HH-style data, one pair per row). `eval_fraction` is the share of distinct prompts held out."""
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rankings):
        groups.setdefault(prompt_key(r.prompt), []).append(i)
    if eval_fraction <= 0 or len(groups) < 2:
        return rankings, []
    order = list(groups.values())  # by first appearance, so the shuffle depends on the data and seed only
    random.Random(seed).shuffle(order)
    held = {i for group in order[: max(1, round(eval_fraction * len(order)))] for i in group}
    return [r for i, r in enumerate(rankings) if i not in held], [r for i, r in enumerate(rankings) if i in held]


def prompt_key(prompt: Any) -> tuple:
    """A hashable key for a conversation prompt (its roles and texts)."""
    return tuple((m["role"], m["content"]) for m in prompt)


def load_rankings(path: str, report: DataReport | None = None, split: str = "train",
                  aspect: str = "mean") -> list[Ranking]:
    """The rankings of a file; rows with no preference in them (all tied) dropped and counted."""
    out = []
    for record in read_records(path):
        try:
            out.append(to_ranking(record, aspect))
        except Dropped as why:
            if report is not None:
                report.drop(split, str(why), record.where)
    return out


def tokenize_pairs(pairs: list[Pair], tokenizer: Any, max_length: int, split: str, report: DataReport,
                   groups: list[int] | None = None) -> list[RewardPair]:
    """Tokenised pairs; groups[i], where given, is the ranking pair i came from."""
    out = []
    for n, p in enumerate(pairs):
        chosen = conversation_with_start(tokenizer, p.prompt, p.chosen, max_length)
        rejected = conversation_with_start(tokenizer, p.prompt, p.rejected, max_length)
        if chosen is None or rejected is None:
            report.drop(split, "response longer than data.max_length", p.where)
            continue
        report.truncated[split] += bool(chosen.cut or rejected.cut)  # the prompt lost its start
        out.append(RewardPair(chosen.ids, rejected.ids, p.margin, p.source, p.where, chosen.start, rejected.start,
                              groups[n] if groups is not None else -1))
    report.kept[split] = len(out)
    return out


def build_reward_data(train_path: str, eval_path: str, eval_fraction: float, tokenizer: Any, max_length: int,
                      seed: int, adjacent_only: bool = False, rating_margin: bool = False, aspect: str = "mean"
                      ) -> tuple[list[RewardPair], list[RewardPair], DataReport]:
    """Tokenised (chosen, rejected) pairs for training and evaluation, with a report of drops."""
    report = DataReport(unit="pairs")
    train = load_rankings(train_path, report, "train", aspect)
    report.read["train"] = len(train) + sum(report.dropped.get("train", {}).values())
    unique = report.drop_duplicates(train, lambda r: (prompt_key(r.prompt), r.responses, r.scores))
    if eval_path:
        train, held = unique, load_rankings(eval_path, report, "eval", aspect)
        report.read["eval"] = len(held) + sum(report.dropped.get("eval", {}).values())
    else:
        train, held = split_rankings(unique, eval_fraction, seed)
        report.read["eval"] = report.held_out = len(held)

    def tokenized(rankings: list[Ranking], split: str) -> list[RewardPair]:
        pairs = [(g, p) for g, r in enumerate(rankings) for p in rankings_to_pairs(r, adjacent_only, rating_margin)]
        return tokenize_pairs([p for _, p in pairs], tokenizer, max_length, split, report, [g for g, _ in pairs])

    return tokenized(train, "train"), tokenized(held, "eval"), report
