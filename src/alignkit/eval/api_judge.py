"""A judge over the OpenAI API: any OpenAI-compatible endpoint (a hosted model, vLLM, `transformers
serve`, `alignkit serve`) reached through the official `openai` client.

Two modes. Pairwise: the judge reads the request and two responses and names the better one; each
pair is asked in both orders, so a judge's taste for a position yields ties, not wins (judges.py).
Grade: the judge rates one response from 1 to 10, as MT-Bench's single-answer grading does (Zheng et
al. 2023). The prompts come from template files (eval/prompts/*.txt shipped; any file with the same
{fields}). Every reply is kept in a cache file keyed by (judge model, template, filled fields), written
as it arrives, so a rerun or a resumed evaluation never asks the same question twice. Requests run
`concurrency` at a time; 429, 5xx, timeouts and dropped connections are retried with exponential
backoff and jitter. A reply that names no verdict is counted as unparseable and reported, never
turned into a tie or a grade.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from alignkit.errors import AlignkitError, ConfigError

PROMPTS = Path(__file__).parent / "prompts"
TEMPLATES = {"pairwise": PROMPTS / "pairwise.txt", "grade": PROMPTS / "grade.txt"}
FIELDS = {"pairwise": ("{prompt}", "{a}", "{b}"), "grade": ("{prompt}", "{response}")}


def load_template(mode: str, path: str = "") -> str:
    """The judge prompt for `mode` from `path` (default: the shipped one); it must hold the mode's fields."""
    file = Path(path) if path else TEMPLATES[mode]
    if not file.is_file():
        raise ConfigError(f"judge_prompt: no such file {file}")
    text = file.read_text(encoding="utf-8")
    missing = [f for f in FIELDS[mode] if f not in text]
    if missing:
        raise ConfigError(f"judge_prompt {file}: a {mode} template needs {', '.join(FIELDS[mode])}; "
                          f"{', '.join(missing)} missing")
    return text


def key_from_env(var: str, option: str) -> str:
    """The secret in environment variable `var` ('' when var is ''), read only here, never logged;
    ConfigError naming `option` (the setting that named var) when it is unset or empty."""
    if not var:
        return ""
    import os

    key = os.environ.get(var, "")
    if not key:
        raise ConfigError(f"{option} {var}: the environment variable {var} is not set or empty")
    return key


def open_judge(url: str, model: str, key_env: str, mode: str, prompt_file: str, cache_path: str | Path,
               concurrency: int, max_retries: int = 5, option: str = "judge_api_key_env") -> APIJudge:
    """An APIJudge from the settings `alignkit eval` and the pipeline's eval share."""
    return APIJudge(url, model, key_from_env(key_env, option), load_template(mode, prompt_file), mode, cache_path,
                    concurrency, max_retries)


def parse_choice(reply: str) -> str | None:
    """'A' or 'B' from a pairwise verdict, or None: "[[A]]" anywhere (the format asked for), else a
    reply that is just the letter (with punctuation), else exactly one of "Response A" / "Response B"."""
    brackets = set(re.findall(r"\[\[\s*([AB])\s*\]\]", reply))
    if len(brackets) == 1:
        return brackets.pop()
    bare = re.fullmatch(r"\W*([AB])\W*", reply.strip())
    if bare:
        return bare.group(1)
    named = set(re.findall(r"\bResponse ([AB])\b", reply))
    return named.pop() if len(named) == 1 and not brackets else None


def parse_grade(reply: str) -> float | None:
    """A 1-10 rating from "[[7]]" (or "[[7.5]]"), else "Rating: 7", else a reply that is just the
    number; None when there is none or it is outside 1-10."""
    for pattern in (r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]", r"[Rr]ating\s*[:=]?\s*(\d+(?:\.\d+)?)", r"^\s*(\d+(?:\.\d+)?)\s*$"):
        found = re.findall(pattern, reply)
        if len(set(found)) == 1:
            value = float(found[0])
            return value if 1 <= value <= 10 else None
    return None


@dataclass
class JudgeUsage:
    """What the judge cost: HTTP requests (retries included), replies from the cache, tokens, seconds."""

    requests: int = 0
    retries: int = 0
    cached: int = 0
    asked: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    unparseable: int = 0


class APIJudge:
    """Questions to one model behind an OpenAI-compatible URL, with the cache, concurrency and retries."""

    def __init__(self, url: str, model: str, api_key: str = "", template: str = "", mode: str = "pairwise",
                 cache_path: str | Path = "", concurrency: int = 8, max_retries: int = 5, timeout: float = 120.0,
                 max_tokens: int = 16, backoff_s: float = 1.0) -> None:
        try:
            import openai
        except ImportError:
            raise ConfigError("judge_url needs the openai client: pip install 'alignkit[openai]'") from None
        self.openai, self.url, self.model, self.mode = openai, url, model, mode
        self.template = template or load_template(mode)
        self.client = openai.OpenAI(base_url=url, api_key=api_key or "none", max_retries=0, timeout=timeout)
        self.concurrency, self.max_retries, self.max_tokens, self.backoff_s = concurrency, max_retries, max_tokens, backoff_s
        self.usage = JudgeUsage()
        self.lock = threading.Lock()
        self.cache_path = Path(cache_path) if cache_path else None
        self.cache: dict[str, str] = {}
        if self.cache_path and self.cache_path.exists():
            for n, line in enumerate(self.cache_path.read_text(encoding="utf-8").splitlines(), 1):
                try:
                    entry = json.loads(line)
                    self.cache[entry["key"]] = entry["reply"]
                except (json.JSONDecodeError, KeyError, TypeError):  # a line cut short by a crash: ask again
                    continue

    def key(self, fields: dict[str, str]) -> str:
        blob = json.dumps({"judge": self.model, "template": self.template, "fields": fields}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def replies(self, questions: Sequence[dict[str, str]]) -> list[str]:
        """The judge's reply to the template filled with each question's fields: from the cache, or asked."""
        keys = [self.key(q) for q in questions]
        todo = {k: q for k, q in zip(keys, questions) if k not in self.cache}
        self.usage.cached += len(keys) - len(todo)
        t0 = time.perf_counter()
        if todo:
            with ThreadPoolExecutor(self.concurrency) as pool:
                asked = pool.map(lambda kq: self._ask(kq[0], self._fill(kq[1])), todo.items())
                for k, reply in zip(todo, asked):
                    self.cache[k] = reply
        self.usage.seconds += time.perf_counter() - t0
        return [self.cache[k] for k in keys]

    def _fill(self, fields: dict[str, str]) -> str:
        text = self.template
        for name, value in fields.items():  # not str.format: answers may hold braces
            text = text.replace("{" + name + "}", value)
        return text

    def _ask(self, key: str, text: str) -> str:
        o = self.openai
        for attempt in range(self.max_retries + 1):
            with self.lock:
                self.usage.requests += 1
            try:
                r = self.client.chat.completions.create(model=self.model, messages=[{"role": "user", "content": text}],
                                                        temperature=0, max_tokens=self.max_tokens)
            except (o.RateLimitError, o.InternalServerError, o.APITimeoutError, o.APIConnectionError) as exc:
                if attempt == self.max_retries:
                    raise AlignkitError(f"judge {self.model} at {self.url}: no answer after {attempt + 1} tries "
                                        f"({type(exc).__name__}: {exc})") from None
                with self.lock:
                    self.usage.retries += 1
                time.sleep(self.backoff_s * 2 ** attempt * (0.5 + random.random()))  # exponential backoff, jitter
                continue
            except o.APIStatusError as exc:
                raise AlignkitError(f"judge {self.model} at {self.url}: HTTP {exc.status_code}: {exc.message}") from None
            reply = r.choices[0].message.content or ""
            with self.lock:
                self.usage.asked += 1
                if r.usage is not None:
                    self.usage.prompt_tokens += r.usage.prompt_tokens
                    self.usage.completion_tokens += r.usage.completion_tokens
                if self.cache_path is not None:
                    with open(self.cache_path, "a", encoding="utf-8") as fh:
                        fh.write(json.dumps({"key": key, "reply": reply}) + "\n")
            return reply
        raise AssertionError("unreachable")

    def prefers_first(self, prompts: Sequence[str], firsts: Sequence[str], seconds: Sequence[str]) -> list[bool | None]:
        """For each (prompt, first, second): True when the judge names the first, False the second, None
        when its reply names neither (counted in usage.unparseable)."""
        questions = [{"prompt": p, "a": a, "b": b} for p, a, b in zip(prompts, firsts, seconds)]
        choices = [parse_choice(r) for r in self.replies(questions)]
        self.usage.unparseable += sum(c is None for c in choices)
        return [None if c is None else c == "A" for c in choices]

    def win_rate(self, requests: Sequence[str], a: Sequence[str], b: Sequence[str]) -> dict[str, Any]:
        """Answers `a` against `b` on `requests`, both orders asked: wins, losses, ties and the win rate
        with its interval (judges.win_rate_summary); a request with an unparseable verdict in either
        order is left out of the rate and counted as `unparseable`, never made a tie."""
        from alignkit.eval.judges import outcome, win_rate_summary

        ab, ba = self.prefers_first(requests, a, b), self.prefers_first(requests, b, a)
        decided = [outcome(x, y) for x, y in zip(ab, ba) if x is not None and y is not None]
        return {**win_rate_summary(decided), "unparseable": sum(x is None or y is None for x, y in zip(ab, ba))}

    def grades(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float | None]:
        """The judge's 1-10 grade of each response (None when unparseable, counted)."""
        questions = [{"prompt": p, "response": r} for p, r in zip(prompts, responses)]
        grades = [parse_grade(r) for r in self.replies(questions)]
        self.usage.unparseable += sum(g is None for g in grades)
        return grades

    def report(self) -> dict[str, Any]:
        return {"url": self.url, "model": self.model, "mode": self.mode, **asdict(self.usage)}
