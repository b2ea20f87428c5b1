"""The OpenAI API's request and response shapes, as `alignkit serve` speaks them: requests checked field
by field (a wrong one is a 400 naming the field and what it takes), responses and stream chunks built
from finished choices, and every error in the API's format ({"error": {"message", "type", "param",
"code"}}) so the official clients raise their usual exceptions.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

ROLES = ("system", "user", "assistant")


class APIError(Exception):
    """An error answered to the client: HTTP status and the OpenAI error body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class Sampling:
    """How to decode one request: temperature 0 is greedy; `stop` strings end a choice (not included)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def batch_key(self) -> tuple:
        """Requests with equal keys can share one generate call (per-row limits and stops are ours)."""
        if self.temperature == 0:
            return ("greedy",)
        return ("sample", self.temperature, self.top_p, self.seed)


@dataclass
class Request:
    """A checked request: the prompt (chat messages or text), how to decode it, and how many choices."""

    model: str
    sampling: Sampling
    n: int = 1
    stream: bool = False
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    include_usage: bool = False


@dataclass
class Choice:
    text: str
    finish_reason: str  # "stop", "length" or "content_filter"
    tokens: int = 0


@dataclass
class Limits:
    """What the server accepts (alignkit serve's flags)."""

    max_tokens_cap: int = 512
    """The most new tokens a request may ask for (max_tokens above it is a 400)."""
    default_max_tokens: int = 128
    """New tokens when a request does not say."""
    max_n: int = 8
    """The most choices per request."""
    context_length: int = 2048
    """Prompt plus new tokens may not exceed this (the model's own limit, or less)."""
    max_body_bytes: int = 1 << 20
    """Request bodies above this are a 413."""


def _number(body: dict, key: str, default: float, lo: float, hi: float, integer: bool = False) -> Any:
    value = body.get(key, default)
    if value is None:
        return default
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not lo <= value <= hi:
        what = "an integer" if integer else "a number"
        raise APIError(400, f"'{key}' must be {what} from {lo:g} to {hi:g}; got {value!r}", param=key)
    return value


def _stops(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(s, str) and s for s in stops):
        raise APIError(400, f"'stop' must be a non-empty string or a list of up to 4 of them; got {stop!r}", param="stop")
    return tuple(stops)


def _sampling(body: dict, limits: Limits) -> Sampling:
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _number(body, key, limits.default_max_tokens, 1, limits.max_tokens_cap, integer=True)
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise APIError(400, f"'seed' must be an integer; got {seed!r}", param="seed")
    return Sampling(max_tokens=max_tokens, temperature=float(_number(body, "temperature", 1.0, 0.0, 2.0)),
                    top_p=float(_number(body, "top_p", 1.0, 0.0, 1.0)), stop=_stops(body), seed=seed)


def _common(body: Any, limits: Limits) -> tuple[dict, Sampling, int, bool, bool]:
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    if not isinstance(body.get("model", ""), str):
        raise APIError(400, "'model' must be a string", param="model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise APIError(400, f"'stream' must be true or false; got {stream!r}", param="stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise APIError(400, "'stream_options' must be an object", param="stream_options")
    n = _number(body, "n", 1, 1, limits.max_n, integer=True)
    return body, _sampling(body, limits), n, stream, bool(options.get("include_usage"))


def chat_request(body: Any, limits: Limits) -> Request:
    """A /v1/chat/completions body checked: messages of {role, content} with string content (or a list
    of text parts), and the decoding fields."""
    body, sampling, n, stream, usage = _common(body, limits)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "'messages' must be a non-empty list of {role, content} objects", param="messages")
    clean = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES + ("developer",):
            raise APIError(400, f"messages[{i}]: expected an object with 'role' one of {', '.join(ROLES)}; got {m!r:.80}",
                           param=f"messages[{i}].role")
        content = m.get("content")
        if isinstance(content, list):  # text parts: [{"type": "text", "text": ...}]
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
                raise APIError(400, f"messages[{i}].content: only text parts are supported", param=f"messages[{i}].content")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise APIError(400, f"messages[{i}].content must be a string; got {content!r:.80}",
                           param=f"messages[{i}].content")
        role = "system" if m["role"] == "developer" else m["role"]
        clean.append({"role": role, "content": content})
    return Request(model=body.get("model", ""), sampling=sampling, n=n, stream=stream, messages=clean,
                   include_usage=usage)


def completion_request(body: Any, limits: Limits) -> Request:
    """A /v1/completions body checked: one prompt string (a list of one is accepted)."""
    body, sampling, n, stream, usage = _common(body, limits)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise APIError(400, "'prompt' must be a string (one prompt per request)", param="prompt")
    return Request(model=body.get("model", ""), sampling=sampling, n=n, stream=stream, prompt=prompt,
                   include_usage=usage)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, choices: list[Choice]) -> dict[str, int]:
    completion = sum(c.tokens for c in choices)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}


def chat_response(rid: str, model: str, choices: list[Choice], prompt_tokens: int) -> dict[str, Any]:
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": i, "message": {"role": "assistant", "content": c.text}, "logprobs": None,
                         "finish_reason": c.finish_reason} for i, c in enumerate(choices)],
            "usage": usage(prompt_tokens, choices)}


def completion_response(rid: str, model: str, choices: list[Choice], prompt_tokens: int) -> dict[str, Any]:
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": i, "text": c.text, "logprobs": None, "finish_reason": c.finish_reason}
                        for i, c in enumerate(choices)],
            "usage": usage(prompt_tokens, choices)}


def chunk(rid: str, model: str, chat: bool, index: int, text: str | None, finish: str | None,
          first: bool = False) -> dict[str, Any]:
    """One server-sent event's payload: a text delta of choice `index` (or its finish reason)."""
    if chat:
        delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else {}
        if text:
            delta["content"] = text
        choice: dict[str, Any] = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                "choices": [choice]}
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}]}
