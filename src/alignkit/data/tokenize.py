"""Tokenise samples with labels on the response tokens only.

The conversation is rendered once with the chat template; the character span of each assistant turn
is found by rendering the conversation up to that turn (with and without the generation prompt), and
a token is labelled when its characters overlap a response span. Every other token gets label -100,
so the loss sees the responses (all assistant turns of a multi-turn chat) and nothing else. EOS ends
the last response and is labelled; if the template does not put it there, it is appended.

Truncation policy (data.truncation): `right` keeps the first max_length tokens, so the prompt survives
and the end of a long response (and its EOS) is lost; `drop` removes the sample. A sample left with
no response token is dropped either way. The caller counts both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alignkit.data.formats import Sample
from alignkit.data.templates import render
from alignkit.errors import DataError

IGNORE_INDEX = -100
_MARK = "\u2063alignkit-response\u2063"  # text no template rewrites, to find where a response starts


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)


def _render(tokenizer: Any, sample: Sample, messages: list, add_generation_prompt: bool = False) -> str:
    try:
        return render(tokenizer, messages, add_generation_prompt)
    except Exception as exc:  # jinja2's TemplateError, or raise_exception() inside a template
        raise DataError(f"{sample.where}: the chat template rejects this conversation ({exc})") from None


def response_spans(tokenizer: Any, sample: Sample) -> tuple[str, list[tuple[int, int]]]:
    """The full text and the (start, end) character span of every trained response in it."""
    if not sample.templated:
        prompt, completion = sample.messages[0]["content"], sample.messages[1]["content"]
        return prompt + completion, [(len(prompt), len(prompt) + len(completion))]
    messages = list(sample.messages)
    full = _render(tokenizer, sample, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or i < sample.response_from:
            continue
        # For a conversation opening with an assistant turn, the prefix is the template's own preamble
        # (BOS, default system prompt, assistant header), which must not be labelled.
        if i:
            before = _render(tokenizer, sample, messages[:i], add_generation_prompt=True)
        else:  # templates refuse an empty conversation: render a marker answer and cut before it
            marked = _render(tokenizer, sample, [{"role": "assistant", "content": _MARK}])
            before = marked[: marked.index(_MARK)] if _MARK in marked else ""
        upto = _render(tokenizer, sample, messages[: i + 1])
        if not (upto.startswith(before) and full.startswith(upto)):
            raise DataError(
                f"{sample.where}: the chat template does not render this conversation as a growing "
                "prefix (a turn changes when later turns are added), so response tokens cannot be "
                "located; use a template without such rewriting"
            )
        spans.append((len(before), len(upto)))
    return full, spans


def needs_eos(tokenizer: Any, text: str, ids: list[int]) -> bool:
    """True when a rendered conversation does not already end with the tokenizer's EOS (as text, e.g.
    ChatML's `<|im_end|>\n`, or as the last token), so one must be appended."""
    eos = tokenizer.eos_token_id
    return eos is not None and (not ids or ids[-1] != eos) and not text.rstrip().endswith(tokenizer.eos_token or "\0")


def tokenize_sample(tokenizer: Any, sample: Sample, max_length: int, truncation: str = "right") -> Example | str:
    """An Example with response-only labels, or a string saying why the sample is dropped."""
    text, spans = response_spans(tokenizer, sample)
    # Plain text gets the tokenizer's own special tokens (BOS for Llama); a template writes its own.
    try:
        enc = tokenizer(text, add_special_tokens=not sample.templated, return_offsets_mapping=True)
    except NotImplementedError:
        raise DataError(f"{type(tokenizer).__name__} cannot map tokens to characters (offset mapping); "
                        "response-only labels need a fast (Rust `tokenizers`) tokenizer") from None
    ids = list(enc["input_ids"])
    labels = [IGNORE_INDEX] * len(ids)
    for t, (start, end) in enumerate(enc["offset_mapping"]):
        if end > start and any(end > a and start < b for a, b in spans):
            labels[t] = ids[t]
    eos = tokenizer.eos_token_id
    if needs_eos(tokenizer, text, ids):
        ids.append(eos)
        labels.append(eos)
    elif eos is not None and ids and ids[-1] == eos:
        labels[-1] = eos  # the template's own EOS after the last response is trained too
    truncated = len(ids) > max_length
    if truncated:
        if truncation == "drop":
            return "longer than data.max_length"
        ids, labels = ids[:max_length], labels[:max_length]
    if all(label == IGNORE_INDEX for label in labels):
        return "no response tokens within data.max_length"
    return Example(ids, labels, truncated)
