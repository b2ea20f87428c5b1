"""Reward-filtered SFT data: a reward model (or a cost model, its cost negated) scores every
demonstration, and those it scores below a floor are dropped and counted in the data report.

Demonstrations written by people are uneven: some comply with a harmful request, some let a false
premise stand. A reward model trained on rankings of the same kinds of responses knows those are
worse, so filtering by its score keeps the SFT model from learning them (the filtering step of
rejection-sampling and filtered-behaviour-cloning methods: Dong et al. 2023, RAFT; Gulcehre et al.
2023, ReST; here applied to the human demonstrations themselves).
"""

from __future__ import annotations

from typing import Any

import torch

from alignkit.data.formats import Sample
from alignkit.data.quality import DataReport


def drop_reason(min_score: float, cost: bool = False) -> str:
    return f"cost model's cost above {-min_score + 0.0:g}" if cost else f"reward model score below {min_score:g}"


def split_last_response(sample: Sample) -> tuple[list[dict[str, str]], str]:
    """(the conversation before the last assistant turn, that turn's text): what a reward model scores."""
    last = max(i for i, m in enumerate(sample.messages) if m["role"] == "assistant")
    return [dict(m) for m in sample.messages[:last]], sample.messages[last]["content"]


def score_samples(samples: list[Sample], model_path: str, batch_size: int = 64, max_length: int = 512) -> torch.Tensor:
    """(N,) the reward model's score of each sample's last response, its offset subtracted (so 0 is the
    mean score of the policy it was normalised on); for a cost model (`alignkit rm objective=cost`) the
    negated cost, so that here too higher is better and 0 is its boundary between unsafe and safe."""
    from alignkit.models import load_tokenizer
    from alignkit.models.reward import is_cost_model, load_reward_model, score_conversations

    model, offset = load_reward_model(model_path)
    tokenizer = load_tokenizer(model_path)
    pairs = [split_last_response(s) for s in samples]
    with torch.no_grad():
        scores = score_conversations(model, tokenizer, [p for p, _ in pairs], [r for _, r in pairs],
                                     max_length=max_length, batch_size=batch_size)
    scores = scores.double() - offset
    return -scores if is_cost_model(model_path) else scores


def keep_scored(samples: list[Sample], scores: Any, min_score: float, split: str,
                report: DataReport, cost: bool = False) -> list[Sample]:
    """The samples scoring at least `min_score`; each other one is counted as dropped (with its
    location) under the reason drop_reason(min_score, cost) (`cost`: the scores are a cost model's,
    negated)."""
    return [s for s, row in zip(samples, scored_rows(samples, scores, min_score, split, report, cost)) if row["kept"]]


def scored_rows(samples: list[Sample], scores: Any, min_score: float, split: str, report: DataReport,
                cost: bool = False) -> list[dict[str, Any]]:
    """Chat rows with their score, source location and whether they reach `min_score`, each one that
    does not counted in `report` (for the kept and dropped files a stage writes: readable by any SFT
    or PPO-ptx loader, the extra fields are ignored)."""
    if len(scores) != len(samples):
        raise ValueError(f"{len(scores)} scores for {len(samples)} samples")
    rows = []
    for s, x in zip(samples, scores):
        kept = float(x) >= min_score
        if not kept:
            report.drop(split, drop_reason(min_score, cost), s.where)
        rows.append({"messages": [dict(m) for m in s.messages], "score": round(float(x), 4), "where": s.where,
                     "kept": kept})
    return rows


def filter_samples(samples: list[Sample], model_path: str, min_score: float, split: str, report: DataReport,
                   max_length: int = 512) -> tuple[list[Sample], list[dict[str, Any]]]:
    """(the samples `model_path` scores at least `min_score`, every sample as a scored row)."""
    from alignkit.models.reward import is_cost_model

    scores = score_samples(samples, model_path, max_length=max_length)
    rows = scored_rows(samples, scores, min_score, split, report, is_cost_model(model_path))
    return [s for s, row in zip(samples, rows) if row["kept"]], rows
