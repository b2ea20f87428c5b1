"""What was dropped from the data and why: every dropped row is counted under a reason."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


@dataclass
class DataReport:
    """Counts per split: rows read, rows kept, rows dropped by reason (with a few locations)."""

    read: Counter = field(default_factory=Counter)
    kept: Counter = field(default_factory=Counter)
    truncated: Counter = field(default_factory=Counter)
    dropped: dict[str, Counter] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    held_out: int = 0
    """Training rows set aside as the eval split (data.eval_fraction); they count as kept in eval."""
    unit: str = "rows"
    """What `kept` counts: rows, or pairs for preference data."""
    packing: dict = field(default_factory=dict)
    """Whether the stage packed samples, and into how many rows (filled in by the stage)."""
    fixed: dict[str, Counter] = field(default_factory=dict)
    """Rows kept after a repair (a trailing user turn trimmed), by reason."""

    def drop(self, split: str, reason: str, where: str) -> None:
        self.dropped.setdefault(split, Counter())[reason] += 1
        self._example(split, reason, where)

    def fix(self, split: str, reason: str, where: str) -> None:
        self.fixed.setdefault(split, Counter())[reason] += 1
        self._example(split, reason, where)

    def _example(self, split: str, reason: str, where: str) -> None:
        seen = self.examples.setdefault(f"{split}: {reason}", [])
        if len(seen) < 3:
            seen.append(where)

    def drop_duplicates(self, rows: list[T], key: Callable[[T], Hashable], split: str = "train") -> list[T]:
        """`rows` with each exact duplicate (a row whose key an earlier row had) dropped and counted;
        each row has a `where` (its file and line)."""
        seen: set = set()
        unique = []
        for row in rows:
            k = key(row)
            if k in seen:
                self.drop(split, "exact duplicate", row.where)  # type: ignore[attr-defined]
                continue
            seen.add(k)
            unique.append(row)
        return unique

    def as_dict(self) -> dict:
        splits = sorted(set(self.read) | set(self.kept))
        out = {
            s: {
                "rows_read": self.read[s],
                "kept": self.kept[s],
                "truncated": self.truncated[s],
                "dropped": dict(self.dropped.get(s, {})),
                "dropped_examples": {k.split(": ", 1)[1]: v for k, v in self.examples.items()
                                     if k.startswith(s + ":") and k.split(": ", 1)[1] in self.dropped.get(s, {})},
            }
            for s in splits
        }
        for s in splits:
            if self.fixed.get(s):
                out[s]["fixed"] = dict(self.fixed[s])
                out[s]["fixed_examples"] = {k.split(": ", 1)[1]: v for k, v in self.examples.items()
                                            if k.startswith(s + ":") and k.split(": ", 1)[1] in self.fixed[s]}
        if self.held_out:
            out["train"]["held_out_for_eval"] = self.held_out
        if self.packing:
            out["packing"] = self.packing
        return out

    def lines(self) -> list[str]:
        out = []
        for split, d in self.as_dict().items():
            if split == "packing" or (d["rows_read"] == 0 and d["kept"] == 0 and not d["dropped"]):
                continue
            drops = ", ".join(f"{n} {reason}" for reason, n in d["dropped"].items()) or "none"
            held = f", {d['held_out_for_eval']} held out as the eval split" if d.get("held_out_for_eval") else ""
            fixed = "".join(f"; fixed: {n} {reason}" for reason, n in d.get("fixed", {}).items())
            out.append(f"{split}: read {d['rows_read']}, kept {d['kept']} {self.unit} ({d['truncated']} truncated){held}; "
                       f"dropped: {drops}{fixed}")
        return out

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.as_dict(), indent=2) + "\n")
