"""Evaluate models on the demo world: the oracle's three axes, win rates, perplexity of the answers.

For each model: greedy answers to every held-out request, scored by the oracle (accuracy overall and
per family, refusal of harmful requests, over-refusal of benign look-alikes), the win rate against
a baseline model judged by the simulated annotator's grades (ties excluded and reported), and the
perplexity of the correct answers given the requests.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from alignkit.data import collate, tokenize_sample
from alignkit.data.formats import Sample
from alignkit.losses import sequence_nll
from alignkit.world.oracle import score, win_rate
from alignkit.world.tasks import Item


def conversations(items: list[Item]) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": item.prompt}] for item in items]


@torch.no_grad()
def answer_perplexity(model: Any, tokenizer: Any, items: list[Item], batch_size: int = 64) -> float:
    """exp(mean NLL per token) of the correct answers (and their EOS) given the requests."""
    examples = [tokenize_sample(tokenizer, Sample(({"role": "user", "content": i.prompt},
                                                   {"role": "assistant", "content": i.answer}), i.prompt), 512)
                for i in items]
    examples = [e for e in examples if not isinstance(e, str)]
    device = next(model.parameters()).device
    nll = tokens = 0.0
    model.eval()
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start:start + batch_size], tokenizer.pad_token_id)
        labels = batch.pop("labels").to(device)
        logits = model(**{k: v.to(device) for k, v in batch.items()}, use_cache=False).logits
        s, n = sequence_nll(logits, labels)
        nll += float(s.sum())
        tokens += float(n.sum())
    return math.exp(min(nll / max(tokens, 1.0), 50.0))


def evaluate_models(models: dict[str, str | Path], splits: dict[str, list[Item]], baseline: str,
                    max_new_tokens: int = 24, batch_size: int = 128) -> dict[str, Any]:
    """Scores of every model on every split, and win rates against `baseline` on each split."""
    from alignkit.models import load_causal_lm, load_tokenizer
    from alignkit.models.generate import generate_responses

    answers: dict[str, dict[str, list[str]]] = {}
    results: dict[str, Any] = {"models": {}, "splits": {name: len(items) for name, items in splits.items()}}
    for name, path in models.items():
        model, tokenizer = load_causal_lm(path), load_tokenizer(path)
        answers[name] = {split: generate_responses(model, tokenizer, conversations(items), max_new_tokens,
                                                   batch_size=batch_size)
                         for split, items in splits.items()}
        first = next(iter(splits))
        results["models"][name] = {
            "path": str(path),
            "scores": {split: score(items, answers[name][split]) for split, items in splits.items()},
            "perplexity": answer_perplexity(model, tokenizer, splits[first]),
        }
    for name in models:
        results["models"][name]["win_rate_vs_" + baseline] = {
            split: win_rate(items, answers[name][split], answers[baseline][split]) for split, items in splits.items()
        }
    results["samples"] = {split: [{"prompt": items[i].prompt, "answer": items[i].answer,
                                   **{name: answers[name][split][i] for name in models}}
                                  for i in range(min(8, len(items)))]
                          for split, items in splits.items()}
    return results
