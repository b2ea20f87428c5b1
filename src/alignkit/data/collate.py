"""Batches as tensors: padded rows with an attention mask, or packed rows with position ids."""

from __future__ import annotations

import torch

from alignkit.data.packing import PackedRow
from alignkit.data.tokenize import IGNORE_INDEX, Example


def collate(rows: list[Example] | list[PackedRow], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch to its longest row.

    Packed rows carry position_ids and no attention_mask, which is what makes transformers mask each
    packed sample separately; their padding forms one more "sample" at the end that nothing attends to
    and no label covers. Unpacked rows get an ordinary attention mask.
    """
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    packed = isinstance(rows[0], PackedRow)
    extra = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r)
        ids[i, :n] = torch.tensor(r.input_ids)
        labels[i, :n] = torch.tensor(r.labels)
        if packed:
            extra[i, :n] = torch.tensor(r.position_ids)
            extra[i, n:] = torch.arange(width - n)
        else:
            extra[i, :n] = 1
    batch = {"input_ids": ids, "labels": labels}
    batch["position_ids" if packed else "attention_mask"] = extra
    return batch
