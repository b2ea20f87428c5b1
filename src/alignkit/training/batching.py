"""Deterministic data order: an endless stream of seeded per-epoch permutations, cut into global batches.

Global batch s holds stream positions [s*G, (s+1)*G), G = batch_size x grad_accum x processes, so the
whole data position is the step number: resuming at step s needs nothing else, batches may span an
epoch boundary, and no sample is dropped. Within a global batch, micro-batch k of process r takes the
slice starting at (k * processes + r) * batch_size: every sample once per epoch across processes.
"""

from __future__ import annotations

import random


def epoch_order(n: int, epoch: int, seed: int) -> list[int]:
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def global_batch(n: int, step: int, global_size: int, seed: int) -> list[int]:
    """Indices of the rows in optimizer step `step` (0-based)."""
    start = step * global_size
    out: list[int] = []
    epoch, pos = divmod(start, n)
    order = epoch_order(n, epoch, seed)
    while len(out) < global_size:
        take = order[pos: pos + global_size - len(out)]
        out += take
        pos += len(take)
        if pos >= n:
            epoch, pos = epoch + 1, 0
            order = epoch_order(n, epoch, seed)
    return out


def micro_batches(indices: list[int], batch_size: int, grad_accum: int, rank: int, world: int) -> list[list[int]]:
    """This process's micro-batches of one global batch, in order."""
    return [
        indices[(k * world + rank) * batch_size: (k * world + rank + 1) * batch_size]
        for k in range(grad_accum)
    ]


def shard(indices: list[int], rank: int, world: int) -> list[int]:
    """Rank r's share of an evaluation set (strided, so every row is seen by exactly one process)."""
    return indices[rank::world]
