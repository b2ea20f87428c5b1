"""Summed response log-probs of two lists of sequences in one forward pass, and a table of them under a
frozen model, sharded over processes: what the offline preference stages share. DPO's two lists are the
chosen and the rejected responses; KTO's are each completion and its mismatched completion (the
reference point's sample).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from alignkit.data.collate import collate_responses
from alignkit.losses.dpo import sequence_logprobs
from alignkit.training.batching import shard

# one sequence: its token ids and the index of its first response token
Response = tuple[Sequence[int], int]


def two_list_logprobs(model: Any, first: list[Response], second: list[Response], pad_id: int, device: Any,
                      pack_rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logp_first, logp_second, count_first, count_second), each (len(first),): the summed log-probs of
    each sequence's response tokens and how many there are, from one forward pass over both lists
    (packed into rows of `pack_rows` tokens when it is not 0). The lists have the same length."""
    seqs = [ids for ids, _ in first] + [ids for ids, _ in second]
    starts = [start for _, start in first] + [start for _, start in second]
    batch = {k: v.to(device) for k, v in collate_responses(seqs, starts, pad_id, pack_rows).items()}
    labels, sequence = batch.pop("labels"), batch.pop("sequence")
    logits = model(**batch, use_cache=False).logits  # a cache would disable packed masking
    logp, count = sequence_logprobs(logits, labels, sequence, len(seqs))
    n = len(first)
    return logp[:n], logp[n:], count[:n], count[n:]


@torch.no_grad()
def logprob_table(model: Any, forward: Callable[[list[int]], tuple[torch.Tensor, torch.Tensor]], rows: int,
                  batch_size: int, accelerator: Any, indices: list[int] | None = None) -> torch.Tensor:
    """(rows, 2): forward(idx) -> the two summed log-probs of the rows at idx, for every row (or those at
    `indices`; the others stay 0), with `model` in eval mode; each process computes its shard and an
    all-reduce assembles the table. Computed once from the starting weights, it is the reference
    policy's side of the DPO and KTO losses."""
    was_training = model.training
    model.eval()
    table = torch.zeros(rows, 2, device=accelerator.device)
    wanted = list(range(rows)) if indices is None else indices
    mine = [wanted[k] for k in shard(list(range(len(wanted))), accelerator.process_index, accelerator.num_processes)]
    for i in range(0, len(mine), batch_size):
        idx = mine[i:i + batch_size]
        with accelerator.autocast():
            a, b = forward(idx)
        table[idx, 0], table[idx, 1] = a.float(), b.float()
    if accelerator.num_processes > 1:
        table = accelerator.reduce(table, reduction="sum")
    model.train(was_training)
    return table.cpu()
