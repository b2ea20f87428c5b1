"""Prompt files for the stages that generate (PPO, best-of-n, distillation): one conversation per row."""

from __future__ import annotations

from typing import Any

from alignkit.data.records import read_records
from alignkit.errors import DataError

Conversation = list[dict[str, str]]


def read_prompts(path: str) -> list[Conversation]:
    """Rows with a string 'prompt', or 'messages' ending with a user turn."""
    return read_prompt_rows(path)[0]


def read_prompt_rows(path: str) -> tuple[list[Conversation], list[dict[str, Any]]]:
    """(conversations, the rows themselves): a reward function reads a row's other fields (its
    'answer', whether it is 'harmful')."""
    out: list[Conversation] = []
    rows: list[dict[str, Any]] = []
    for r in read_records(path):
        row = r.row
        if isinstance(row.get("prompt"), str) and row["prompt"].strip():
            out.append([{"role": "user", "content": row["prompt"]}])
        elif isinstance(row.get("messages"), list) and row["messages"] and isinstance(row["messages"][-1], dict) \
                and row["messages"][-1].get("role") == "user":
            out.append(row["messages"])
        else:
            raise DataError(f"{r.where}: expected a non-empty string 'prompt', or 'messages' ending with a user turn")
        rows.append(row)
    if not out:
        raise DataError(f"{path}: no prompts")
    return out, rows

