"""Rewards from programs: verifiers of the answer, format checks, length and refusal rules, the demo
world's oracle, or any Python function, combined by weight (RLVR: reinforcement learning with
verifiable rewards, Lambert et al. 2024; DeepSeek-R1's accuracy and format rewards, 2025).

A reward function is called as fn(prompts, responses, rows, **options) and returns one float per
response: prompts are the conversations, responses the texts, rows the prompt rows' own fields
(e.g. "answer", "harmful"), options the spec's other keys. Specs are mappings
    {fn: NAME or "module:function", weight: w, ...options}
with NAME one of BUILT_IN. A "module:function" reward imports and runs the user's own code.
"""

from __future__ import annotations

import functools
import importlib
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch

from alignkit.errors import ConfigError, DataError

RewardFunction = Callable[..., Sequence[float]]


def _normalise(text: str) -> str:
    """Lower case, whitespace collapsed, trailing punctuation off: 'Paris.' matches 'paris'."""
    return re.sub(r"\s+", " ", str(text)).strip().strip(".!?").strip().lower()


def _field(rows: list[dict[str, Any]], field: str, fn: str) -> list[Any]:
    missing = [i for i, row in enumerate(rows) if field not in row]
    if missing:
        raise DataError(f"reward '{fn}' needs the field '{field}' in every prompt row; row {missing[0] + 1} has "
                        f"{', '.join(sorted(rows[missing[0]])) or 'no fields'}")
    return [row[field] for row in rows]


def exact_match(prompts: list, responses: list[str], rows: list[dict], field: str = "answer") -> list[float]:
    """1 where the response is the row's answer (case, spacing and final punctuation aside), else 0."""
    return [float(_normalise(r) == _normalise(a)) for r, a in zip(responses, _field(rows, field, "exact_match"))]


NUMBER = re.compile(r"-?\d+(?:[.,]\d+)?")


def numeric(prompts: list, responses: list[str], rows: list[dict], field: str = "answer",
            tolerance: float = 1e-6) -> list[float]:
    """1 where the last number in the response equals the row's answer within `tolerance`, else 0
    (a response without a number gets 0)."""
    out = []
    for response, answer in zip(responses, _field(rows, field, "numeric")):
        found = NUMBER.findall(response)
        try:
            ok = bool(found) and abs(float(found[-1].replace(",", ".")) - float(answer)) <= tolerance
        except (TypeError, ValueError):
            raise DataError(f"reward 'numeric': the row's '{field}' must be a number, got {str(answer)[:40]!r}") from None
        out.append(float(ok))
    return out


def regex(prompts: list, responses: list[str], rows: list[dict], pattern: str = "", full: bool = False) -> list[float]:
    """1 where the response matches `pattern` (anywhere, or as a whole with full=true), else 0: a
    format check. RE2, so matching is linear in the text (safety/rules.py)."""
    if not pattern:
        raise ConfigError("reward 'regex' needs a non-empty 'pattern'")
    rx = _compiled(pattern)
    return [float((rx.fullmatch(r) if full else rx.search(r)) is not None) for r in responses]


@functools.lru_cache(maxsize=64)
def _compiled(pattern: str) -> Any:
    """A regex reward's pattern, compiled once for every batch it scores."""
    from alignkit.safety.rules import compile_linear

    return compile_linear(pattern, "reward 'regex' pattern")


def length(prompts: list, responses: list[str], rows: list[dict], max_words: int = 50,
           per_word: float = 0.01) -> list[float]:
    """-per_word for each word beyond max_words, else 0: a penalty for rambling (weight it positively)."""
    return [-per_word * max(0, len(r.split()) - max_words) for r in responses]


def refusal(prompts: list, responses: list[str], rows: list[dict], field: str = "harmful") -> list[float]:
    """+1 for refusing a row marked harmful, -1 for refusing one marked benign, 0 otherwise (the
    rule-based refusal detector, alignkit.safety.is_refusal)."""
    from alignkit.safety import is_refusal

    out = []
    for response, harmful in zip(responses, _field(rows, field, "refusal")):
        refused = is_refusal(response)
        out.append((1.0 if harmful else -1.0) if refused else 0.0)
    return out


# Name -> function, or "module:function" for one imported on first use (the world's oracle is the
# demo's, so the library does not import it).
BUILT_IN: dict[str, RewardFunction | str] = {
    "exact_match": exact_match, "numeric": numeric, "regex": regex, "length": length, "refusal": refusal,
    "oracle": "alignkit.world.oracle:reward", "world_check": "alignkit.world.oracle:check",
}


def resolve(name: str) -> RewardFunction:
    """A reward function by built-in name or "module:function" (which runs the user's own code)."""
    target = BUILT_IN.get(name, name)
    if callable(target):
        return target
    if ":" not in target:
        import difflib

        close = difflib.get_close_matches(name, BUILT_IN, n=1)
        raise ConfigError(f"unknown reward function '{name}'" + (f"; did you mean '{close[0]}'?" if close else "")
                          + f"; built in: {', '.join(BUILT_IN)}, or module:function for your own")
    module, fn = target.split(":", 1)
    try:
        found = getattr(importlib.import_module(module), fn)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"reward function '{name}' cannot be loaded: {exc}") from None
    if not callable(found):
        raise ConfigError(f"reward function '{name}' is not callable")
    return found


def combined_reward(specs: Sequence[dict[str, Any]]) -> Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """One reward from weighted reward functions: (prompts, responses, rows) -> (the weighted sum (N,),
    each function's own rewards by name, for the log). Every spec is checked here, every call's
    result there: one finite float per response, or a clear error naming the function."""
    parts = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict) or "fn" not in spec:
            raise ConfigError(f"rewards[{i}] must be a mapping with 'fn' (and 'weight', options), got {str(spec)[:60]}")
        options = {k: v for k, v in spec.items() if k not in ("fn", "weight", "name")}
        weight = spec.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise ConfigError(f"rewards[{i}] ({spec['fn']}): weight must be a finite number, got {weight!r}")
        parts.append((str(spec.get("name", spec["fn"])), resolve(str(spec["fn"])), float(weight), options))
    names = [p[0] for p in parts]
    if len(set(names)) != len(names):
        raise ConfigError(f"rewards: two functions share the name '{next(n for n in names if names.count(n) > 1)}'; "
                          "give one a 'name'")

    def reward(prompts: list, responses: list[str], rows: list[dict]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total = torch.zeros(len(responses), dtype=torch.float64)
        each = {}
        for name, fn, weight, options in parts:
            values = fn(prompts, responses, rows, **options)
            try:
                got = torch.as_tensor(values, dtype=torch.float64).flatten()
            except (TypeError, ValueError):
                raise DataError(f"reward function '{name}' returned {type(values).__name__}, not numbers") from None
            if got.numel() != len(responses):
                raise DataError(f"reward function '{name}' returned {got.numel()} values for {len(responses)} responses")
            if not torch.isfinite(got).all():
                raise DataError(f"reward function '{name}' returned a non-finite value (NaN or inf) for response "
                                f"{int((~torch.isfinite(got)).nonzero()[0]) + 1}")
            each[name] = got
            total += weight * got
        return total, each

    return reward
