"""The safety filter's learned layer: a sequence-classification model with one output that scores harm
(a cost model from `alignkit rm objective=cost`, or any such model), beside the rules.

A request is scored as a one-turn conversation with an empty reply (the cost model's "labelled
request" rows are read the same way); a reply, with the request before it. A score above `threshold`
(0 for a cost model: its sign loss puts the boundary there) means unsafe. The model loads on first use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

COMBINE = ("either", "both", "rules", "classifier")


@dataclass
class Classifier:
    path: str
    threshold: float = 0.0
    """Scores above this are unsafe."""
    combine: str = "either"
    """either: blocked when the rules or the classifier say so; both: only when both do; rules: the rules
    decide (the score is still reported); classifier: the classifier decides."""
    applies_to: frozenset[str] = frozenset({"input"})
    """Which side the classifier checks: input (requests) and/or output (replies, scored after their request)."""
    max_length: int = 256
    batch_size: int = 32
    _loaded: Any = field(default=None, repr=False)

    def scores(self, texts: list[str], requests: list[str] | None = None) -> list[float]:
        """Harm scores of requests (requests=None) or of replies to `requests`."""
        import torch

        from alignkit.models import load_tokenizer
        from alignkit.models.reward import load_reward_model, score_conversations

        if self._loaded is None:
            model, offset = load_reward_model(self.path)
            self._loaded = (model, load_tokenizer(self.path), offset)
        model, tokenizer, offset = self._loaded
        if requests is None:
            prompts, replies = [[{"role": "user", "content": t}] for t in texts], [""] * len(texts)
        else:
            prompts, replies = [[{"role": "user", "content": r}] for r in requests], list(texts)
        with torch.inference_mode():
            out = score_conversations(model, tokenizer, prompts, replies, self.max_length, self.batch_size)
        return [float(s) - offset for s in out]


def check_path(path: str, what: str) -> str:
    """`path` when it is a directory or a hub id (org/name); else a ConfigError naming `what`, so a typo
    fails when the filter is built, not at the first request it screens."""
    from alignkit.errors import ConfigError
    from alignkit.models.loading import is_hub_id

    if not Path(path).expanduser().is_dir() and not is_hub_id(path):
        raise ConfigError(f"{what}: classifier '{path}' is not a model directory or a hub id (org/name); give a "
                          "sequence-classification model, e.g. the model/ directory `alignkit rm objective=cost` wrote")
    return path


def resolve_path(path: str, rules_file: str | Path | None) -> str:
    """A classifier path as written in a rules file: relative to that file when it exists there, else as given."""
    if rules_file is not None and not Path(path).is_absolute():
        beside = Path(rules_file).parent / path
        if beside.exists():
            return str(beside)
    return path
