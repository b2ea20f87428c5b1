"""The safety filter: check a request before the model sees it and a response before the user does.

`filtered_responses` wraps any batch generation function: a blocked request is never sent to the
model and gets the refusal message; a blocked response is replaced by it. Prompts are plain strings
or chat message lists ([{"role", "content"}, ...]), whose last user turn is the request checked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from alignkit.safety.rules import Rules, load_rules

Prompt = str | Sequence[Mapping[str, str]]
GenerateFn = Callable[[list[Prompt]], Sequence[str]]


@dataclass(frozen=True)
class Verdict:
    blocked: bool
    category: str | None = None
    pattern: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class SafetyFilter:
    rules: Rules

    def check_input(self, text: str) -> Verdict:
        """Whether a request is blocked, by which category and pattern."""
        return self._check("input", text)

    def check_output(self, text: str) -> Verdict:
        """Whether a response is blocked, by which category and pattern."""
        return self._check("output", text)

    def refusal(self, verdict: Verdict) -> str:
        """What to answer instead of a blocked item."""
        return self.rules.message_for(verdict.category)

    def _check(self, side: str, text: str) -> Verdict:
        text = text.replace("\u2019", "'")  # so rules need only the straight apostrophe
        excused = None
        for cat in self.rules.categories:
            if side not in cat.applies_to:
                continue
            hit = cat.find(text)
            if hit is not None and hit.excused_by is None:
                return Verdict(True, cat.name, hit.pattern, f"{side} matches {cat.name} rule '{hit.pattern}'")
            if hit is not None and excused is None:
                excused = f"{side} matches {cat.name} rule '{hit.pattern}' but allow rule '{hit.excused_by}' covers it"
        return Verdict(False, reason=excused or f"{side} matches no rule")


def load_filter(path: str | Path | None = None) -> SafetyFilter:
    """A filter from a rules YAML file; the shipped default rules when `path` is None."""
    return SafetyFilter(load_rules(path))


def request_text(prompt: Prompt) -> str:
    """The request in a prompt: the string itself, or a chat's last user turn ("" if it has none)."""
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    return users[-1] if users else ""


@dataclass
class Filtered:
    """Responses aligned with the prompts, and why each was kept or replaced."""

    responses: list[str]
    verdicts: list[Verdict]
    """The input verdict for a request blocked on input, else the output verdict."""


def filtered_responses(prompts: Sequence[Prompt], generate_fn: GenerateFn, safety_filter: SafetyFilter) -> Filtered:
    """Run `generate_fn` on the allowed prompts only (one call, in order; none when all are blocked)
    and replace blocked responses with the refusal message."""
    verdicts = [safety_filter.check_input(request_text(p)) for p in prompts]
    allowed = [i for i, v in enumerate(verdicts) if not v.blocked]
    generated = list(generate_fn([prompts[i] for i in allowed])) if allowed else []
    if len(generated) != len(allowed):
        raise ValueError(f"generate_fn returned {len(generated)} responses for {len(allowed)} prompts")
    responses = [safety_filter.refusal(v) for v in verdicts]
    for i, text in zip(allowed, generated):
        verdicts[i] = safety_filter.check_output(text)
        responses[i] = safety_filter.refusal(verdicts[i]) if verdicts[i].blocked else text
    return Filtered(responses, verdicts)


def guard(generate_fn: GenerateFn, safety_filter: SafetyFilter) -> Callable[[Sequence[Prompt]], Filtered]:
    """`generate_fn` with the filter around it: prompts in, `Filtered` out."""
    return lambda prompts: filtered_responses(prompts, generate_fn, safety_filter)
