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


def collate_responses(seqs: list[list[int]], starts: list[int], pad_id: int, pack_rows: int = 0
                      ) -> dict[str, torch.Tensor]:
    """Whole conversations (prompt then response) for one forward pass, with each response token
    labelled by its sequence: `labels` (the token, -100 elsewhere) and `sequence` (its index in
    `seqs`, -1 elsewhere), so per-sequence log-probs are one scatter-add (see
    losses.dpo.sequence_logprobs).

    pack_rows 0: one right-padded row per sequence with an attention mask. pack_rows > 0: sequences
    bin-packed into rows of at most that many tokens, position ids restarting per sequence (each
    sequence's first token is a prompt token, so no label is predicted across a boundary).
    """
    from alignkit.data.packing import best_fit_bins

    rows = best_fit_bins([len(s) for s in seqs], pack_rows) if pack_rows else [[i] for i in range(len(seqs))]
    width = max(sum(len(seqs[i]) for i in members) for members in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    sequence = torch.full((len(rows), width), -1, dtype=torch.long)
    extra = torch.zeros((len(rows), width), dtype=torch.long)  # position ids (packed) or the mask
    for r, members in enumerate(rows):
        col = 0
        for i in sorted(members):
            s, n, start = seqs[i], len(seqs[i]), max(starts[i], 1)
            ids[r, col:col + n] = torch.tensor(s)
            labels[r, col + start:col + n] = torch.tensor(s[start:])
            sequence[r, col + start:col + n] = i
            extra[r, col:col + n] = torch.arange(n) if pack_rows else 1
            col += n
        if pack_rows:
            extra[r, col:] = torch.arange(width - col)  # padding: one more segment nothing reads
    return {"input_ids": ids, "labels": labels, "sequence": sequence,
            "position_ids" if pack_rows else "attention_mask": extra}
