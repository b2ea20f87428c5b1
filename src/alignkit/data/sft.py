"""SFT data end to end: files -> samples -> quality filtering -> response-only tokenised examples."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from alignkit.config import DataConfig
from alignkit.data.formats import Sample, to_sample
from alignkit.data.quality import DataReport
from alignkit.data.records import Record, read_records
from alignkit.data.tokenize import Example, tokenize_sample
from alignkit.errors import DataError


@dataclass
class SFTData:
    train: list[Example]
    eval: list[Example]
    report: DataReport
    scored: list[dict[str, Any]] = field(default_factory=list)
    """With data.filter_model: every training row read, with its score and whether it was kept."""


def load_samples(path: str, fmt: str, split: str = "train") -> list[Sample]:
    return [to_sample(r, fmt) for r in read_records(path, split)]


def kept_records(records: list[Record], field: str, values: list[str], split: str, report: DataReport) -> list[Record]:
    """The records whose `field` is one of `values` (as strings); each other one dropped and counted
    under "FIELD not in {VALUES}" (braces: the console reads square brackets as markup). A record
    without the field is an error naming its file and line."""
    wanted, reason = {str(v) for v in values}, f"{field} not in {{{', '.join(map(str, values))}}}"
    out = []
    for r in records:
        if field not in r.row:
            raise DataError(f"{r.where}: no '{field}' field; data.keep_field={field} keeps only rows whose "
                            f"'{field}' is one of {list(values)}")
        if str(r.row[field]) in wanted:
            out.append(r)
        else:
            report.drop(split, reason, r.where)
    return out


def read_samples(cfg: DataConfig, path: str, split: str, report: DataReport) -> list[Sample]:
    """The rows of `path` as samples, counted as read under `split`, those that data.keep_field
    rules out dropped and counted."""
    records = read_records(path, cfg.split)
    report.read[split] = len(records)
    if cfg.keep_field:
        records = kept_records(records, cfg.keep_field, cfg.keep_values, split, report)
    return [to_sample(r, cfg.format) for r in records]


def clean_samples(samples: list[Sample], split: str, report: DataReport, dedupe: bool,
                  seen: set | None = None) -> list[Sample]:
    """Drop empty responses and exact duplicates (also of keys in `seen`, e.g. the training split)."""
    seen = set() if seen is None else seen
    out = []
    for s in samples:
        for reason in s.fixes:
            report.fix(split, reason, s.where)
        if s.has_empty_response():
            report.drop(split, "empty response", s.where)
            continue
        key = s.key()
        if dedupe and key in seen:
            report.drop(split, "exact duplicate", s.where)
            continue
        seen.add(key)
        out.append(s)
    return out


def tokenize_samples(samples: list[Sample], tokenizer: Any, cfg: DataConfig, split: str,
                     report: DataReport) -> list[Example]:
    examples = []
    for s in samples:
        result = tokenize_sample(tokenizer, s, cfg.max_length, cfg.truncation)
        if isinstance(result, str):
            report.drop(split, result, s.where)
            continue
        report.truncated[split] += int(result.truncated)
        examples.append(result)
    report.kept[split] = len(examples)
    return examples


def build_sft_data(cfg: DataConfig, tokenizer: Any, seed: int) -> SFTData:
    """Read, select (data.keep_field), validate, dedupe, split and tokenise the SFT data, counting every
    drop by reason."""
    report = DataReport()
    train = read_samples(cfg, cfg.train_path, "train", report)
    seen: set = set()
    train = clean_samples(train, "train", report, cfg.dedupe, seen)
    scored: list[dict[str, Any]] = []
    if cfg.filter_model:  # before the split, so the held-out rows are as clean as the trained ones
        from alignkit.data.score_filter import filter_samples

        train, scored = filter_samples(train, cfg.filter_model, cfg.filter_min_score, "train", report, cfg.max_length)
    if cfg.eval_path:
        held = read_samples(cfg, cfg.eval_path, "eval", report)
        # Deduping against the training keys too: an eval row seen in training is not held out.
        held = clean_samples(held, "eval", report, cfg.dedupe, seen)
    elif cfg.eval_fraction > 0 and len(train) > 1:
        order = list(range(len(train)))
        random.Random(seed).shuffle(order)
        n_eval = max(1, round(cfg.eval_fraction * len(train)))
        held_idx = set(order[:n_eval])
        held = [s for i, s in enumerate(train) if i in held_idx]
        train = [s for i, s in enumerate(train) if i not in held_idx]
        report.read["eval"] = report.held_out = len(held)
    else:
        held = []
    return SFTData(
        train=tokenize_samples(train, tokenizer, cfg, "train", report),
        eval=tokenize_samples(held, tokenizer, cfg, "eval", report),
        report=report,
        scored=scored,
    )
