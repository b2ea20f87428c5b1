"""The safety filter: check a request before the model sees it and a response before the user does.

`filtered_responses` wraps any batch generation function: a blocked request is never sent to the
model and gets the refusal message; a blocked response is replaced by it. Prompts are plain strings
or chat message lists ([{"role", "content"}, ...]), whose last user turn is the request checked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from alignkit.safety.classifier import Classifier
from alignkit.safety.normalize import views
from alignkit.safety.rules import Rules, load_rules

Prompt = str | Sequence[Mapping[str, str]]
GenerateFn = Callable[[list[Prompt]], Sequence[str]]


@dataclass(frozen=True)
class Verdict:
    blocked: bool
    category: str | None = None
    pattern: str | None = None
    reason: str = ""
    score: float | None = None
    """The classifier's harm score, when a classifier checked the text."""


CLASSIFIER_CATEGORY = "classifier"


@dataclass(frozen=True)
class SafetyFilter:
    rules: Rules
    classifier: Classifier | None = None
    """The learned layer; None: the one the rules file names, if any."""

    def __post_init__(self) -> None:
        if self.classifier is None and self.rules.classifier is not None:
            object.__setattr__(self, "classifier", self.rules.classifier)

    def check_input(self, text: str) -> Verdict:
        """Whether a request is blocked, by which category and pattern (or the classifier's score)."""
        return self.check_inputs([text])[0]

    def check_output(self, text: str, request: str = "") -> Verdict:
        """Whether a response (to `request`, which the classifier reads with it) is blocked."""
        return self.check_outputs([text], [request])[0]

    def check_inputs(self, texts: list[str]) -> list[Verdict]:
        """check_input for many requests, the classifier scoring them in batches."""
        return self._combine("input", [self._check("input", t) for t in texts], texts, None)

    def check_outputs(self, texts: list[str], requests: list[str] | None = None) -> list[Verdict]:
        """check_output for many responses (and their requests), the classifier scoring them in batches."""
        requests = requests if requests is not None else [""] * len(texts)
        return self._combine("output", [self._check("output", t) for t in texts], texts, requests)

    def _combine(self, side: str, verdicts: list[Verdict], texts: list[str], requests: list[str] | None) -> list[Verdict]:
        c = self.classifier
        if c is None or side not in c.applies_to or not texts:
            return verdicts
        scores = c.scores(list(texts), requests)
        out = []
        for v, score in zip(verdicts, scores):
            flagged = score > c.threshold
            blocked = {"either": v.blocked or flagged, "both": v.blocked and flagged, "rules": v.blocked,
                       "classifier": flagged}[c.combine]
            says = f"the classifier scores {score:.2f} ({'>' if flagged else '<='} {c.threshold:g})"
            if blocked and v.blocked:
                out.append(replace(v, score=score, reason=f"{v.reason}; {says}"))
            elif blocked:
                out.append(Verdict(True, CLASSIFIER_CATEGORY, None, f"{side}: {says}", score))
            else:
                out.append(Verdict(False, reason=f"{v.reason}; {says}" + (f" (combine={c.combine})" if v.blocked else ""),
                                   score=score))
        return out

    def refusal(self, verdict: Verdict) -> str:
        """What to answer instead of a blocked item."""
        return self.rules.message_for(verdict.category)

    def _check(self, side: str, text: str) -> Verdict:
        """Blocked when any normalised view of `text` (normalize.views) is blocked by a category."""
        excused = None
        for view_name, view in views(text):
            how = side if view_name == "canonical" else f"{side} (read as {view_name})"
            for cat in self.rules.categories:
                if side not in cat.applies_to:
                    continue
                hit = cat.find(view)
                if hit is not None and hit.excused_by is None:
                    return Verdict(True, cat.name, hit.pattern, f"{how} matches {cat.name} rule '{hit.pattern}'")
                if hit is not None and excused is None:
                    excused = f"{how} matches {cat.name} rule '{hit.pattern}' but allow rule '{hit.excused_by}' covers it"
        return Verdict(False, reason=excused or f"{side} matches no rule")


def load_filter(path: str | Path | None = None, classifier: str | None = None, threshold: float = 0.0,
                combine: str = "either") -> SafetyFilter:
    """A filter from a rules YAML file (the shipped default rules when `path` is None), with the
    classifier the file names, or `classifier` (a model path) in its place."""
    rules = load_rules(path)
    if classifier:
        from alignkit.safety.classifier import COMBINE

        if combine not in COMBINE:
            from alignkit.errors import ConfigError

            raise ConfigError(f"combine must be one of {', '.join(COMBINE)}, got {combine!r}")
        from alignkit.safety.classifier import check_path

        return SafetyFilter(rules, Classifier(check_path(classifier, "load_filter"), threshold, combine))
    return SafetyFilter(rules)


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
    requests = [request_text(p) for p in prompts]
    verdicts = safety_filter.check_inputs(requests)
    allowed = [i for i, v in enumerate(verdicts) if not v.blocked]
    generated = list(generate_fn([prompts[i] for i in allowed])) if allowed else []
    if len(generated) != len(allowed):
        raise ValueError(f"generate_fn returned {len(generated)} responses for {len(allowed)} prompts")
    responses = [safety_filter.refusal(v) for v in verdicts]
    for i, v, text in zip(allowed, safety_filter.check_outputs(generated, [requests[i] for i in allowed]), generated):
        verdicts[i] = v
        responses[i] = safety_filter.refusal(v) if v.blocked else text
    return Filtered(responses, verdicts)


def guard(generate_fn: GenerateFn, safety_filter: SafetyFilter) -> Callable[[Sequence[Prompt]], Filtered]:
    """`generate_fn` with the filter around it: prompts in, `Filtered` out."""
    return lambda prompts: filtered_responses(prompts, generate_fn, safety_filter)
