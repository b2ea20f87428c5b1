"""Instruction-data formats, all normalised to one shape: a list of chat messages.

Accepted rows:
- Alpaca: {"instruction", "input" (optional), "output", "system" (optional)}; the user turn is the
  instruction, followed by a blank line and the input when there is one.
- Chat: {"messages": [{"role", "content"}, ...]} with roles system/user/assistant, or the ShareGPT
  spelling {"conversations": [{"from": "human"|"gpt"|"system", "value"}, ...]}.
- Prompt/completion: {"prompt": str, "completion": str} is plain text (no chat template); with lists
  of messages for both it is a chat whose completion turns are the responses (assistant turns inside
  the prompt, e.g. few-shot examples, are context and not trained).
- Text: {"text": str} is plain text trained on every token (no chat template); a raw Anthropic HH
  transcript ("\n\nHuman: ... \n\nAssistant: ...") is read as the chat it is.

Quirks of real data that are not errors are fixed and counted (Sample.fixes): a conversation that
ends with user turns (no reply recorded) loses them and trains on the assistant turns before.

A row that fits no format, or has a field of the wrong type, raises DataError naming the row and the
field. A row with an empty response is not an error: it is dropped and counted by the caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from alignkit.data.records import Record
from alignkit.errors import DataError

ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "model": "assistant", "system": "system"}
FORMATS = ("alpaca", "messages", "prompt_completion", "text")
HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")
TRAILING_USER = "trailing user turn trimmed"


@dataclass(frozen=True)
class Sample:
    """One training conversation. `templated` False means plain text: the messages are exactly one
    user turn (the prompt) and one assistant turn (the completion), joined without a chat template."""

    messages: tuple[dict[str, str], ...]
    where: str
    templated: bool = True
    response_from: int = 0
    """Index of the first message whose assistant turns are trained (prompt/completion rows: the
    completion's first message, so assistant turns inside the prompt stay context)."""
    fixes: tuple[str, ...] = ()
    """What was repaired in the row (counted in the data report), e.g. a trailing user turn trimmed."""

    def key(self) -> tuple:
        """Identity for exact-duplicate detection."""
        return (self.templated,) + tuple((m["role"], m["content"]) for m in self.messages)

    def has_empty_response(self) -> bool:
        return any(m["role"] == "assistant" and not m["content"].strip() for m in self.messages[self.response_from:])


def detect_format(row: dict[str, Any]) -> str | None:
    if "messages" in row or "conversations" in row:
        return "messages"
    if "instruction" in row and "output" in row:
        return "alpaca"
    if "prompt" in row and "completion" in row:
        return "prompt_completion"
    if "text" in row:
        return "text"
    return None


def to_sample(record: Record, fmt: str = "auto") -> Sample:
    """Normalise one row to a Sample, or raise DataError naming the row and the field."""
    row, where = record.row, record.where
    if fmt == "auto":
        detected = detect_format(row)
        if detected is None:
            raise DataError(
                f"{where}: cannot tell the format from keys {sorted(row)}; expected instruction+output "
                "(Alpaca), messages or conversations (chat), prompt+completion, or text"
            )
        fmt = detected
    if fmt == "alpaca":
        return _from_alpaca(row, where)
    if fmt == "messages":
        return _from_messages(row, where)
    if fmt == "prompt_completion":
        return _from_prompt_completion(row, where)
    if fmt == "text":
        return _from_text(row, where)
    raise DataError(f"unknown data format '{fmt}'; expected auto or one of {', '.join(FORMATS)}")


def _field(row: dict[str, Any], name: str, where: str, *, required: bool = True) -> str:
    if name not in row or row[name] is None:
        if required:
            raise DataError(f"{where}: missing field '{name}'")
        return ""
    value = row[name]
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{name}' must be a string, got {type(value).__name__}")
    return value


def _from_alpaca(row: dict[str, Any], where: str) -> Sample:
    instruction = _field(row, "instruction", where)
    extra = _field(row, "input", where, required=False)
    output = _field(row, "output", where)
    system = _field(row, "system", where, required=False)
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    messages = ([{"role": "system", "content": system}] if system.strip() else []) + [
        {"role": "user", "content": user},
        {"role": "assistant", "content": output},
    ]
    return Sample(tuple(messages), where)


def _message_list(value: Any, where: str, name: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: field '{name}' must be a non-empty list of messages")
    messages = []
    for i, msg in enumerate(value):
        at = f"{where}: {name}[{i}]"
        if not isinstance(msg, dict):
            raise DataError(f"{at} must be an object with role and content, got {type(msg).__name__}")
        if "from" in msg and "role" not in msg:  # ShareGPT spelling
            raw_role, content_key = msg.get("from"), "value"
            role = SHAREGPT_ROLES.get(str(raw_role).lower()) if raw_role is not None else None
        else:
            raw_role, content_key = msg.get("role"), "content"
            role = raw_role if raw_role in ROLES else None
        if raw_role is None:
            raise DataError(f"{at}: missing field 'role'")
        if role is None:
            raise DataError(f"{at}: unknown role '{raw_role}'; expected one of {', '.join(ROLES)}")
        if content_key not in msg or msg[content_key] is None:
            raise DataError(f"{at}: missing field '{content_key}'")
        content = msg[content_key]
        if not isinstance(content, str):
            raise DataError(f"{at}: field '{content_key}' must be a string, got {type(content).__name__}")
        messages.append({"role": role, "content": content})
    return messages


def _from_messages(row: dict[str, Any], where: str) -> Sample:
    name = "messages" if "messages" in row else "conversations"
    if name not in row:
        raise DataError(f"{where}: missing field 'messages'")
    return _chat(_message_list(row[name], where, name), where, name)


def _chat(messages: list[dict[str, str]], where: str, name: str) -> Sample:
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: field '{name}' has no assistant turn to train on")
    fixes: tuple[str, ...] = ()
    if messages[-1]["role"] != "assistant":  # the conversation stopped before a reply: train on the rest
        while messages[-1]["role"] != "assistant":
            messages = messages[:-1]
        fixes = (TRAILING_USER,)
    return Sample(tuple(messages), where, fixes=fixes)


def parse_hh(text: str, where: str, name: str = "text") -> list[dict[str, str]]:
    """An Anthropic HH transcript ("\n\nHuman: ...\n\nAssistant: ...") as chat messages."""
    parts = HH_TURN.split(text)
    if parts[0].strip():
        raise DataError(f"{where}: field '{name}' has text before its first '\n\nHuman:' turn")
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)]


def is_hh(text: str) -> bool:
    return text.startswith("\n\nHuman:") and "\n\nAssistant:" in text


def _from_text(row: dict[str, Any], where: str) -> Sample:
    text = _field(row, "text", where)
    if is_hh(text):
        return _chat(parse_hh(text, where), where, "text")
    # Plain text: an empty prompt and the whole text as the completion, so every token is trained.
    return Sample(({"role": "user", "content": ""}, {"role": "assistant", "content": text}), where, templated=False)


def _from_prompt_completion(row: dict[str, Any], where: str) -> Sample:
    for name in ("prompt", "completion"):
        if name not in row or row[name] is None:
            raise DataError(f"{where}: missing field '{name}'")
    prompt, completion = row["prompt"], row["completion"]
    if isinstance(prompt, list) and isinstance(completion, list):  # conversational prompt/completion
        messages = _message_list(prompt, where, "prompt") + _message_list(completion, where, "completion")
        if not any(m["role"] == "assistant" for m in messages[len(prompt):]):
            raise DataError(f"{where}: field 'completion' has no assistant turn")
        return Sample(tuple(messages), where, response_from=len(prompt))
    prompt = _field(row, "prompt", where)
    completion = _field(row, "completion", where)
    return Sample(({"role": "user", "content": prompt}, {"role": "assistant", "content": completion}), where,
                  templated=False)
