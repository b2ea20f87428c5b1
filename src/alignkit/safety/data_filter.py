"""Safety filtering of training data: drop unsafe conversations and rows that fail the quality checks.

A row is dropped when a user turn is blocked by the filter and the reply to it is not a refusal
(the model would learn to comply), or when an assistant turn is blocked and is not a refusal. A
refusal to an unsafe request is kept: it is the behaviour we want to train, even when it repeats
the request's words. Quality checks are the SFT data's own (empty response, exact duplicate).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignkit.data.formats import Sample, to_sample
from alignkit.data.quality import DataReport
from alignkit.data.records import Record, read_records
from alignkit.data.sft import clean_samples
from alignkit.safety.filter import SafetyFilter, load_filter
from alignkit.safety.refusal import is_refusal


@dataclass(frozen=True)
class Drop:
    where: str
    reason: str
    detail: str = ""


@dataclass
class FilterReport(DataReport):
    """A DataReport that also keeps every drop (DataReport keeps three locations per reason)."""

    drops: list[Drop] = field(default_factory=list)

    def drop(self, split: str, reason: str, where: str, detail: str = "") -> None:
        self.drops.append(Drop(where, reason, detail))
        super().drop(split, reason, where)

    def counts(self) -> dict[str, int]:
        """Dropped rows by reason, over all splits."""
        out: dict[str, int] = {}
        for counter in self.dropped.values():
            for reason, n in counter.items():
                out[reason] = out.get(reason, 0) + n
        return out


def unsafe_reason(sample: Sample, safety_filter: SafetyFilter) -> tuple[str, str] | None:
    """(reason, detail) when a conversation is unsafe training data, else None."""
    messages = sample.messages
    for i, m in enumerate(messages):
        if m["role"] == "user":
            verdict = safety_filter.check_input(m["content"])
            if verdict.blocked and not is_refusal(_reply_to(messages, i)):
                return f"unsafe request ({verdict.category})", verdict.reason
        elif m["role"] == "assistant":
            # A refusal may name what it refuses ("I can't help you build a bomb"): its refusing
            # sentences are exempt, every other sentence of the reply is checked.
            for sentence in _SENTENCE_END.split(m["content"]):
                if is_refusal(sentence):
                    continue
                verdict = safety_filter.check_output(sentence)
                if verdict.blocked:
                    return f"unsafe response ({verdict.category})", verdict.reason
    return None


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def _reply_to(messages: Sequence[dict[str, str]], i: int) -> str:
    return next((m["content"] for m in messages[i + 1:] if m["role"] == "assistant"), "")


def filter_rows(records: Sequence[Record], safety_filter: SafetyFilter, *, fmt: str = "auto",
                dedupe: bool = True, split: str = "train", near_threshold: float = 0.0, min_response_words: int = 0,
                max_words: int = 0, max_tokens: int = 0, tokenizer: Any = None) -> tuple[list[Record], FilterReport]:
    """The records that pass the quality checks and the safety filter, and what was dropped why.
    A row that fits no data format raises DataError, as everywhere else.

    Checks in order: empty response and exact duplicate (the SFT data's own), length bounds (fewer
    than min_response_words words in the responses, more than max_words words in the conversation,
    more than max_tokens tokens with `tokenizer`; 0 disables each), the safety filter, and then
    near-duplicates: of rows whose word-shingle Jaccard similarity is >= near_threshold (MinHash,
    alignkit.data.similarity; 0 disables), the first is kept and the later ones dropped."""
    samples = [to_sample(r, fmt) for r in records]
    report = FilterReport()
    report.read[split] = len(samples)
    by_where = {r.where: r for r in records}
    kept: list[Sample] = []
    for sample in clean_samples(samples, split, report, dedupe):
        problem = length_problem(sample, min_response_words, max_words, max_tokens, tokenizer) or \
            unsafe_reason(sample, safety_filter)
        if problem is not None:
            report.drop(split, problem[0], sample.where, problem[1])
            continue
        kept.append(sample)
    if near_threshold > 0:
        from alignkit.data.similarity import near_duplicate_pairs

        dropped: set[int] = set()
        for i, j, score in near_duplicate_pairs([_text(s) for s in kept], near_threshold):
            if i not in dropped and j not in dropped:
                dropped.add(j)
                report.drop(split, "near duplicate", kept[j].where, f"Jaccard {score:.3f} with {kept[i].where}")
        kept = [s for k, s in enumerate(kept) if k not in dropped]
    report.kept[split] = len(kept)
    return [by_where[s.where] for s in kept], report


def _text(sample: Sample) -> str:
    return "\n".join(m["content"] for m in sample.messages)


def length_problem(sample: Sample, min_response_words: int, max_words: int, max_tokens: int,
                   tokenizer: Any) -> tuple[str, str] | None:
    replies = [m["content"] for m in sample.messages[sample.response_from:] if m["role"] == "assistant"]
    n_reply = sum(len(r.split()) for r in replies)
    if min_response_words and n_reply < min_response_words:
        return "response too short", f"{n_reply} words < {min_response_words}"
    if max_words:
        n = sum(len(m["content"].split()) for m in sample.messages)
        if n > max_words:
            return "too long (words)", f"{n} words > {max_words}"
    if max_tokens and tokenizer is not None:
        n = sum(len(tokenizer(m["content"], add_special_tokens=False)["input_ids"]) for m in sample.messages)
        if n > max_tokens:
            return "too long (tokens)", f"{n} tokens > {max_tokens}"
    return None


def filter_file(in_path: str | Path, out_path: str | Path, rules_path: str | Path | None = None, *,
                fmt: str = "auto", dedupe: bool = True, **bounds: Any) -> FilterReport:
    """Filter any data file read_records reads; write the kept rows, unchanged, as JSONL. `bounds`:
    filter_rows's near_threshold, min_response_words, max_words, max_tokens and tokenizer."""
    kept, report = filter_rows(read_records(in_path), load_filter(rules_path), fmt=fmt, dedupe=dedupe, **bounds)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w", encoding="utf-8") as fh:
        for record in kept:
            fh.write(json.dumps(record.row, ensure_ascii=False) + "\n")
    return report
