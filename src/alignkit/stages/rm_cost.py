"""The cost model's batches and held-out figures (`alignkit rm objective=cost`; the loss is
alignkit.losses.cost, Safe RLHF eq. 6). The rm stage's loop calls these in place of its pair batches."""

from __future__ import annotations

from typing import Any

import torch

from alignkit.data.cost import CostExample
from alignkit.losses.cost import cost_accuracy, cost_example_losses
from alignkit.models.reward import batch_sequences
from alignkit.training import engine
from alignkit.training.run import reduce_sum

INDEX_KEYS = ("unsafe", "seq_example", "harm", "safe")


def collate_costs(examples: list[CostExample], pad_id: int, pack_rows: int = 0) -> dict[str, torch.Tensor]:
    """Every sequence of the examples for one forward pass (padded, or packed into rows), with each
    sequence's label and example, and the positions of each ranked pair's two sequences."""
    seqs, unsafe, owner, harm, safe = [], [], [], [], []
    for e, ex in enumerate(examples):
        base = len(seqs)
        seqs += ex.seqs
        unsafe += ex.unsafe
        owner += [e] * len(ex.seqs)
        if ex.more_harmful is not None:
            harm.append(base + ex.more_harmful)
            safe.append(base + 1 - ex.more_harmful)
    out = {"unsafe": torch.tensor(unsafe, dtype=torch.bool), "seq_example": torch.tensor(owner),
           "harm": torch.tensor(harm, dtype=torch.long), "safe": torch.tensor(safe, dtype=torch.long)}
    return {**batch_sequences(seqs, pad_id, pack_rows), **out}


def cost_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if k not in INDEX_KEYS}


def cost_batch(model: Any, examples: list[CostExample], pad_id: int, pack_rows: int, device: Any
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """Summed loss over the examples and the sums the progress and metrics show."""
    batch = {k: v.to(device) for k, v in collate_costs(examples, pad_id, pack_rows).items()}
    costs = model(**cost_inputs(batch))
    losses = cost_example_losses(costs, batch["unsafe"], batch["seq_example"], batch["harm"], batch["safe"],
                                 len(examples))
    c = costs.detach()
    return losses.sum(), {"loss": float(losses.detach().sum()), "examples": float(len(examples)),
                          "acc": float(cost_accuracy(c, batch["unsafe"]).sum()), "labels": float(len(c)),
                          "pair_acc": float((c[batch["harm"]] > c[batch["safe"]]).float().sum()),
                          "pairs": float(len(batch["harm"]))}


def summarize_costs(sums: dict[str, float], seconds: float, done: int) -> dict[str, float]:
    out = {"loss": sums["loss"] / sums["examples"], "accuracy": sums["acc"] / sums["labels"],
           "examples_per_s": sums["examples"] / seconds, "examples": int(sums["examples"])}
    if sums["pairs"]:
        out["pair_accuracy"] = sums["pair_acc"] / sums["pairs"]
    return out


@torch.no_grad()
def evaluate_costs(model: Any, examples: list[CostExample], batch_size: int, pad_id: int, accelerator: Any,
                   pack_rows: int = 0) -> dict[str, float]:
    """Held-out figures, all processes: eval_accuracy (the verdict cost > 0 against the label, per
    labelled response), eval_unsafe_recall and eval_safe_recall, eval_pair_accuracy (the more harmful
    response costs more), eval_loss, and eval_accuracy/category:NAME and /SOURCE per group."""
    model.eval()
    groups = sorted({f"category:{e.category}" for e in examples if e.category} | {e.source for e in examples if e.source})
    keys = ["loss", "examples", "acc", "labels", "tp", "pos", "tn", "neg", "pair_acc", "pairs"]
    sums = dict.fromkeys(keys + [f"acc/{g}" for g in groups] + [f"n/{g}" for g in groups], 0.0)
    for chunk, real in engine.lockstep(examples, accelerator.process_index, accelerator.num_processes, batch_size):
        batch = {k: v.to(accelerator.device) for k, v in collate_costs(chunk, pad_id, pack_rows).items()}
        with accelerator.autocast():
            costs = model(**cost_inputs(batch)).float()
        if not real:
            continue
        unsafe = batch["unsafe"]
        right = cost_accuracy(costs, unsafe)
        losses = cost_example_losses(costs, unsafe, batch["seq_example"], batch["harm"], batch["safe"], len(chunk))
        sums["loss"] += float(losses.sum())
        sums["examples"] += len(chunk)
        sums["acc"] += float(right.sum())
        sums["labels"] += len(costs)
        sums["tp"] += float(right[unsafe].sum())
        sums["pos"] += float(unsafe.sum())
        sums["tn"] += float(right[~unsafe].sum())
        sums["neg"] += float((~unsafe).sum())
        if len(batch["harm"]):
            sums["pair_acc"] += float((costs[batch["harm"]] > costs[batch["safe"]]).sum())
            sums["pairs"] += len(batch["harm"])
        for i, e in enumerate(batch["seq_example"].tolist()):
            for g in (f"category:{chunk[e].category}" if chunk[e].category else None, chunk[e].source or None):
                if g:
                    sums[f"acc/{g}"] += float(right[i])
                    sums[f"n/{g}"] += 1
    totals = dict(zip(sums, reduce_sum(accelerator, *sums.values())))
    model.train()
    out = {"eval_accuracy": totals["acc"] / max(totals["labels"], 1.0),
           "eval_loss": totals["loss"] / max(totals["examples"], 1.0),
           "eval_unsafe_recall": totals["tp"] / max(totals["pos"], 1.0), "eval_safe_recall": totals["tn"] / max(totals["neg"], 1.0)}
    if totals["pairs"]:
        out["eval_pair_accuracy"] = totals["pair_acc"] / totals["pairs"]
    out.update({f"eval_accuracy/{g}": totals[f"acc/{g}"] / totals[f"n/{g}"] for g in groups if totals[f"n/{g}"]})
    return out
