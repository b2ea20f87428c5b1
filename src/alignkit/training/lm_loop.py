"""The causal-LM stage tail that SFT, pretraining and sequence-level distillation share (they differ
only in their data and labels: response tokens for SFT, every token for pretraining).

Through the shared step loop (training/loop.py): the micro-batches' summed NLL is normalised by the
labelled tokens of the whole global batch (docs/implementation_details.md, item 7); held-out NLL and
perplexity at intervals; the model saved with its curves.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from alignkit.data import collate
from alignkit.losses import sequence_nll
from alignkit.training import engine
from alignkit.training.loop import close_run, save_model, start_training, train_steps
from alignkit.training.run import reduce_sum, say


def train_and_save(cfg: Any, *, name: str, accelerator: Any, model: Any, tokenizer: Any, train_rows: list,
                   eval_rows: list, run_dir: Path, base_model_path: str | None = None) -> Path:
    """Everything after a causal-LM stage's own setup: the loop, the final evaluation, and the model
    saved (with its training curves) to run_dir/model."""
    run = start_training(cfg, accelerator, model, run_dir, len(train_rows))
    pad_id = tokenizer.pad_token_id
    device = accelerator.device

    def batches(indices: list[int], mine: list[list[int]]) -> tuple[list, float]:
        parts = []
        for mb in mine:
            rows = [train_rows[i] for i in mb]
            batch = collate(rows, pad_id)
            parts.append((rows, batch, int((batch["labels"][:, 1:] != -100).sum())))  # labelled tokens
        (global_tokens,) = reduce_sum(accelerator, sum(tokens for _, _, tokens in parts))
        return parts, max(global_tokens, 1.0)

    def loss(part: tuple[list, dict[str, torch.Tensor], int]) -> tuple[torch.Tensor, dict[str, float]]:
        rows, batch, tokens = part
        batch = {key: v.to(device) for key, v in batch.items()}
        labels = batch.pop("labels")
        logits = run.model(**batch, use_cache=False).logits  # a cache would disable packed masking
        nll_sum, _ = sequence_nll(logits, labels)
        return nll_sum.sum(), {"nll": float(nll_sum.detach().sum()), "tokens": float(tokens),
                               "seen": float(sum(len(r) for r in rows)),  # useful (non-pad) tokens
                               "samples": float(sum(getattr(r, "num_samples", 1) for r in rows))}

    def summarize(sums: dict[str, float], seconds: float, done: int) -> dict[str, float]:
        # tokens / samples: what the steps since the last row trained on, all processes.
        return {"loss": sums["nll"] / max(sums["tokens"], 1.0), "tokens_per_s": sums["seen"] / seconds,
                "tokens": int(sums["seen"]), "samples": int(sums["samples"]),
                "epoch": done * run.global_size / len(train_rows)}

    evaluate = (lambda: evaluate_nll(run.model, eval_rows, cfg.train.eval_batch_size, pad_id, accelerator)) \
        if eval_rows else None
    result = train_steps(cfg, run, name=name, batches=batches, loss=loss, summarize=summarize, evaluate=evaluate,
                         show=("loss", "lr", "tokens_per_s"),
                         hint="lower optim.lr, or use float32 weights (model.dtype) with train.precision=bf16")
    if result:
        say(accelerator, f"eval loss {result['eval_loss']:.4f}, perplexity {result['eval_ppl']:.2f}")
    model_dir = run_dir / "model"
    save_model(accelerator, run.model, tokenizer, model_dir, base_model_path)
    return close_run(run, model_dir, name)


@torch.no_grad()
def evaluate_nll(model: Any, rows: list, batch_size: int, pad_id: int, accelerator: Any) -> dict[str, float]:
    """Token-weighted held-out NLL and its perplexity, over all processes."""
    model.eval()
    nll = tokens = 0.0
    for part, real in engine.lockstep(rows, accelerator.process_index, accelerator.num_processes, batch_size):
        batch = collate(part, pad_id)
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        labels = batch.pop("labels")
        with accelerator.autocast():
            logits = model(**batch, use_cache=False).logits
        s, n = sequence_nll(logits, labels)
        nll += float(s.sum()) * real
        tokens += float(n.sum()) * real
    nll, tokens = reduce_sum(accelerator, nll, tokens)
    model.train()
    loss = nll / max(tokens, 1.0)
    return {"eval_loss": loss, "eval_ppl": math.exp(min(loss, 50.0))}
