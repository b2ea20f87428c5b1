"""Cost-model data: responses labelled safe or unsafe, and pairs ranked by harm (Safe RLHF's format).

Accepted rows (`source` and `category` optional on each, kept for per-group accuracy):
- a labelled response: {"prompt": str | messages, "response": str, "safe": bool} (or "unsafe": bool,
  or "harmful": bool, exactly one of the three);
- a labelled request: {"text": str, "safe" | "unsafe" | "harmful": bool}: the request scored alone
  (a user turn and an empty reply), what a request filter's classifier sees;
- PKU-SafeRLHF: {"prompt", "response_0", "response_1", "is_response_0_safe", "is_response_1_safe",
  "safer_response_id": 0 | 1}: both responses labelled and one pair ranked by harm.

Everything becomes a `CostExample`: one or two token sequences, a label per sequence (True: unsafe),
and for two, which one is the more harmful. Rows of one prompt go to the same split.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from alignkit.data.preferences import Messages, _prompt, _response
from alignkit.data.quality import DataReport
from alignkit.data.records import Record, read_records
from alignkit.data.reward import conversation_with_start, prompt_key
from alignkit.errors import DataError

LABEL_KEYS = ("safe", "unsafe", "harmful")
PKU_KEYS = ("response_0", "response_1", "is_response_0_safe", "is_response_1_safe", "safer_response_id")


@dataclass(frozen=True)
class CostRow:
    """A parsed row: responses to one prompt, a label each (True: unsafe), and the more harmful one."""

    prompt: Messages
    responses: tuple[str, ...]
    unsafe: tuple[bool, ...]
    more_harmful: int | None
    where: str
    source: str = ""
    category: str = ""


@dataclass
class CostExample:
    seqs: list[list[int]]
    unsafe: list[bool]
    more_harmful: int | None
    """Index into seqs of the more harmful response of a ranked pair; None: no pair."""
    source: str
    category: str
    where: str


def _bool(row: dict[str, Any], key: str, where: str) -> bool:
    value = row[key]
    if not isinstance(value, bool):
        raise DataError(f"{where}: field '{key}' must be true or false, got {value!r}")
    return value


def _label(row: dict[str, Any], where: str) -> bool:
    """True when the row marks its response unsafe."""
    given = [k for k in LABEL_KEYS if k in row]
    if len(given) != 1:
        raise DataError(f"{where}: a labelled row needs exactly one of the fields {', '.join(LABEL_KEYS)} (true or "
                        f"false), got {', '.join(given) if given else 'none'}")
    value = _bool(row, given[0], where)
    return not value if given[0] == "safe" else value


def to_cost_row(record: Record) -> CostRow:
    """One row of any accepted shape, checked; a DataError names the file, line and field."""
    row, where = record.row, record.where
    extra = {"source": str(row.get("source", "")), "category": str(row.get("category", ""))}
    if "response_0" in row or "safer_response_id" in row:
        missing = [k for k in ("prompt", *PKU_KEYS) if k not in row]
        if missing:
            raise DataError(f"{where}: a PKU-SafeRLHF row needs {', '.join(missing)}")
        safer = row["safer_response_id"]
        if safer not in (0, 1) or isinstance(safer, bool):
            raise DataError(f"{where}: safer_response_id must be 0 or 1, got {safer!r}")
        responses = (_response(row["response_0"], where, "response_0"), _response(row["response_1"], where, "response_1"))
        unsafe = (not _bool(row, "is_response_0_safe", where), not _bool(row, "is_response_1_safe", where))
        return CostRow(_prompt(row["prompt"], where), responses, unsafe, 1 - safer, where, **extra)
    if "text" in row and "prompt" not in row:
        if not isinstance(row["text"], str) or not row["text"].strip():
            raise DataError(f"{where}: field 'text' must be non-empty text")
        return CostRow(_prompt(row["text"], where), ("",), (_label(row, where),), None, where, **extra)
    if "prompt" in row and "response" in row:
        return CostRow(_prompt(row["prompt"], where), (_response(row["response"], where, "response"),),
                       (_label(row, where),), None, where, **extra)
    raise DataError(f"{where}: a cost-model row needs 'prompt' and 'response' with a safe/unsafe label, 'text' with "
                    f"a label, or the PKU-SafeRLHF fields ({', '.join(PKU_KEYS)}); got {', '.join(sorted(row)) or 'no fields'}")


def split_by_prompt(rows: list[CostRow], eval_fraction: float, seed: int) -> tuple[list[CostRow], list[CostRow]]:
    """Whole prompts to train or eval (seeded), so no prompt is both learned and judged."""
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(prompt_key(r.prompt), []).append(i)
    if eval_fraction <= 0 or len(groups) < 2:
        return rows, []
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    held = {i for group in order[: max(1, round(eval_fraction * len(order)))] for i in group}
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def tokenize_cost_rows(rows: list[CostRow], tokenizer: Any, max_length: int, split: str,
                       report: DataReport) -> list[CostExample]:
    out = []
    for r in rows:
        found = [conversation_with_start(tokenizer, r.prompt, text, max_length) for text in r.responses]
        if any(f is None for f in found):
            report.drop(split, "response longer than data.max_length", r.where)
            continue
        report.truncated[split] += any(f.cut for f in found if f is not None)
        out.append(CostExample([f.ids for f in found if f is not None], list(r.unsafe), r.more_harmful,
                               r.source, r.category, r.where))
    report.kept[split] = len(out)
    return out


def build_cost_data(train_path: str, eval_path: str, eval_fraction: float, tokenizer: Any, max_length: int,
                    seed: int) -> tuple[list[CostExample], list[CostExample], DataReport]:
    """Tokenised examples for training and evaluation, with a report of drops."""
    report = DataReport(unit="rows")

    def load(path: str, split: str) -> list[CostRow]:
        rows = [to_cost_row(r) for r in read_records(path)]
        report.read[split] = len(rows)
        return report.drop_duplicates(rows, lambda r: (prompt_key(r.prompt), r.responses, r.unsafe), split)

    train = load(train_path, "train")
    if eval_path:
        held = load(eval_path, "eval")
    else:
        train, held = split_by_prompt(train, eval_fraction, seed)
        report.read["eval"] = report.held_out = len(held)
    return (tokenize_cost_rows(train, tokenizer, max_length, "train", report),
            tokenize_cost_rows(held, tokenizer, max_length, "eval", report), report)
