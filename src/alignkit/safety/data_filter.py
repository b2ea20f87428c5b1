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
                dedupe: bool = True, split: str = "train") -> tuple[list[Record], FilterReport]:
    """The records that pass the quality checks and the safety filter, and what was dropped why.
    A row that fits no data format raises DataError, as everywhere else."""
    samples = [to_sample(r, fmt) for r in records]
    report = FilterReport()
    report.read[split] = len(samples)
    by_where = {r.where: r for r in records}
    kept = []
    for sample in clean_samples(samples, split, report, dedupe):
        problem = unsafe_reason(sample, safety_filter)
        if problem is not None:
            report.drop(split, problem[0], sample.where, problem[1])
            continue
        kept.append(by_where[sample.where])
    report.kept[split] = len(kept)
    return kept, report


def filter_file(in_path: str | Path, out_path: str | Path, rules_path: str | Path | None = None, *,
                fmt: str = "auto", dedupe: bool = True) -> FilterReport:
    """Filter any data file read_records reads; write the kept rows, unchanged, as JSONL."""
    kept, report = filter_rows(read_records(in_path), load_filter(rules_path), fmt=fmt, dedupe=dedupe)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w", encoding="utf-8") as fh:
        for record in kept:
            fh.write(json.dumps(record.row, ensure_ascii=False) + "\n")
    return report
