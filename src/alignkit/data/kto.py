"""Unpaired feedback for KTO: one response per row, labelled desirable or not.

Rows: {"prompt": str | messages, "completion": str | messages, "label": true | false} (TRL's
unpaired preference format); pairwise and ranked preference rows are read too, each pair giving its
chosen response as desirable and its rejected one as undesirable. Prompts go whole to train or eval.
Each example also carries a mismatched sequence, its prompt with the completion of another prompt
in its split, from which KTO estimates the policy's KL from the reference (losses/kto.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from alignkit.data.preferences import Dropped, parse_prompt, parse_response, rankings_to_pairs, to_ranking
from alignkit.data.quality import DataReport
from alignkit.data.records import read_records
from alignkit.data.reward import conversation_with_start, prompt_key
from alignkit.errors import DataError


@dataclass
class Unpaired:
    prompt: tuple
    completion: str
    desirable: bool
    where: str


@dataclass
class KTOExample:
    ids: list[int]
    start: int
    """Index of the completion's first token in ids."""
    desirable: bool
    where: str
    kl_ids: list[int]
    kl_start: int
    """The same prompt with another prompt's completion (for the KL reference point)."""


def read_unpaired(path: str, report: DataReport, split: str, aspect: str = "mean") -> list[Unpaired]:
    out: list[Unpaired] = []
    for record in read_records(path):
        row, where = record.row, record.where
        if "label" in row and "completion" in row:
            label = row["label"]
            if not isinstance(label, bool):
                raise DataError(f"{where}: field 'label' must be true (desirable) or false, got {label!r}")
            out.append(Unpaired(parse_prompt(row.get("prompt"), where),
                                parse_response(row["completion"], where, "completion"), label, where))
            continue
        try:
            ranking = to_ranking(record, aspect)
        except Dropped as why:
            report.drop(split, str(why), where)
            continue
        for pair in rankings_to_pairs(ranking):
            out += [Unpaired(pair.prompt, pair.chosen, True, where), Unpaired(pair.prompt, pair.rejected, False, where)]
    return out


def tokenize(rows: list[Unpaired], tokenizer: Any, max_length: int, split: str, report: DataReport) -> list[KTOExample]:
    """Examples with their mismatched sequence: the completion of the next row (in a seeded order)
    whose prompt differs; a split with one prompt only has none to mismatch (its own completion)."""
    out = []
    for i, row in enumerate(rows):
        own = conversation_with_start(tokenizer, row.prompt, row.completion, max_length)
        other = next((rows[(i + k) % len(rows)] for k in range(1, len(rows))
                      if rows[(i + k) % len(rows)].prompt != row.prompt), row)
        mismatched = conversation_with_start(tokenizer, row.prompt, other.completion, max_length)
        if own is None or mismatched is None:
            report.drop(split, "response longer than data.max_length", row.where)
            continue
        report.truncated[split] += bool(own.cut)
        out.append(KTOExample(own.ids, own.start, row.desirable, row.where, mismatched.ids, mismatched.start))
    report.kept[split] = len(out)
    return out


def build_kto_data(train_path: str, eval_path: str, eval_fraction: float, tokenizer: Any, max_length: int, seed: int,
                   aspect: str = "mean") -> tuple[list[KTOExample], list[KTOExample], DataReport]:
    """Tokenised examples for training and evaluation, exact duplicates dropped, every drop counted."""
    report = DataReport(unit="examples")
    train = read_unpaired(train_path, report, "train", aspect)
    report.read["train"] = len(train)
    unique = report.drop_duplicates(train, lambda row: (prompt_key(row.prompt), row.completion, row.desirable))
    random.Random(seed).shuffle(unique)  # the mismatched completions come from a seeded neighbour
    if eval_path:
        held = read_unpaired(eval_path, report, "eval", aspect)
        report.read["eval"] = len(held)
        train = unique
    else:
        prompts = sorted({prompt_key(r.prompt) for r in unique})
        random.Random(seed).shuffle(prompts)
        out = set(prompts[:round(eval_fraction * len(prompts))]) if eval_fraction > 0 and len(prompts) > 1 else set()
        train = [r for r in unique if prompt_key(r.prompt) not in out]
        held = [r for r in unique if prompt_key(r.prompt) in out]
        report.read["eval"] = report.held_out = len(held)
    if train and all(r.desirable for r in train) or train and not any(r.desirable for r in train):
        raise DataError(f"{train_path}: every training example is labelled "
                        f"{'desirable' if train[0].desirable else 'undesirable'}; KTO needs both kinds")
    return (tokenize(train, tokenizer, max_length, "train", report),
            tokenize(held, tokenizer, max_length, "eval", report), report)
