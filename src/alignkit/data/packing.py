"""Packing: several short samples share one sequence, with position ids restarting at each sample.

transformers builds a block-diagonal causal mask from position ids that restart at 0 when no 2-D
attention mask is given (`masking_utils.find_packed_sequence_indices`), so a token never attends to
another sample. `packing_is_exact` checks this on the actual model before packing is used: logits
of two samples packed together must equal their logits run one at a time.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

import torch

from alignkit.data.tokenize import IGNORE_INDEX, Example
from alignkit.errors import ConfigError


@dataclass
class PackedRow:
    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    num_samples: int

    def __len__(self) -> int:
        return len(self.input_ids)


def best_fit_bins(lengths: list[int], capacity: int) -> list[list[int]]:
    """Best-fit-decreasing bin packing: indices grouped so each group's lengths sum to at most
    capacity (an item longer than capacity gets a bin of its own)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (space left, bin index), sorted
    for i in order:
        need = lengths[i]
        at = bisect.bisect_left(free, (need, -1))
        if at < len(free):
            space, b = free.pop(at)
            bins[b].append(i)
            bisect.insort(free, (space - need, b))
        else:
            bins.append([i])
            bisect.insort(free, (max(capacity, need) - need, len(bins) - 1))
    return bins


def pack_examples(examples: list[Example], max_length: int) -> list[PackedRow]:
    """Examples bin-packed (best fit decreasing) into rows of at most max_length tokens.

    The first label of every sample is forced to -100: with position ids restarting, a sample's first
    token would otherwise be predicted from the previous sample's last token.
    """
    bins = best_fit_bins([len(e) for e in examples], max_length)
    rows = []
    for members in bins:
        ids: list[int] = []
        labels: list[int] = []
        pos: list[int] = []
        for i in sorted(members):  # keep the data's own order inside a row
            ex = examples[i]
            ids += ex.input_ids
            labels += [IGNORE_INDEX] + ex.labels[1:]
            pos += list(range(len(ex)))
        rows.append(PackedRow(ids, labels, pos, len(members)))
    return rows


@torch.no_grad()
def packing_is_exact(model: torch.nn.Module, vocab_size: int, atol: float = 1e-4) -> tuple[bool, str]:
    """(True, "") when the model gives packed samples the same logits as separate ones, else
    (False, what went wrong)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(3, vocab_size, (1, 5), generator=gen)
    b = torch.randint(3, vocab_size, (1, 7), generator=gen)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        sep = [model(input_ids=x.to(device), use_cache=False).logits.float().cpu() for x in (a, b)]
        packed_ids = torch.cat([a, b], dim=1).to(device)
        pos = torch.cat([torch.arange(5), torch.arange(7)]).unsqueeze(0).to(device)
        packed = model(input_ids=packed_ids, position_ids=pos, use_cache=False).logits.float().cpu()
    except Exception as exc:  # a model (or kernel) that rejects position_ids cannot pack
        return False, f"failed the packing check ({type(exc).__name__}: {exc})"
    finally:
        model.train(was_training)
    if torch.allclose(packed, torch.cat(sep, dim=1), atol=atol, rtol=1e-3):
        return True, ""
    return False, "lets packed samples attend to each other"


def resolve_packing(cfg: Any, model: torch.nn.Module, vocab_size: int) -> bool:
    """Pack when asked or when auto and a numerical check shows packed samples are masked apart.
    cfg: a stage config with data.packing, peft.method and model.attn_implementation (SFT, DPO)."""
    if cfg.data.packing == "off":
        return False
    if cfg.peft.method == "prefix":
        if cfg.data.packing == "on":
            raise ConfigError("data.packing=on cannot be used with prefix tuning (the prefix is one per row)")
        return False
    exact, problem = packing_is_exact(model, vocab_size)
    if cfg.data.packing == "on" and not exact:
        raise ConfigError(f"data.packing=on, but {type(model).__name__} with attn_implementation="
                          f"{cfg.model.attn_implementation} {problem}; use packing=off or auto")
    return exact
