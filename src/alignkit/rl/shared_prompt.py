"""A group's responses share their prompt: run it through the model once and let every response
attend to its keys and values, in generation and in the training forward pass, instead of once per
response. With n responses per prompt the prompt's share of the work falls by n; the results are
the same up to float rounding (the same positions, masks and weights; only the batch the prompt's
matmuls run in differs). Rollout layout as in rl/rollout.py: prompts left-padded to P, responses R.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from alignkit.models.generate import position_ids_from_mask


@functools.cache
def cache_arg() -> str:
    """The forward/generate argument (and output field) for the KV cache: transformers renamed
    `past_key_values` to `cache` within 5.x."""
    import transformers.generation.utils as generation

    return "cache" if hasattr(generation, "ALL_CACHE_NAMES") else "past_key_values"


def can_share(model: Any) -> bool:
    """Whether `model` (unwrapped) can take a cache built by another forward pass: not with PEFT
    prompt learning (prefix tuning owns the cache) nor with gradient checkpointing (which turns the
    cache off in training)."""
    return not prompt_learning(model) and not getattr(model, "is_gradient_checkpointing", False)


def prompt_learning(model: Any) -> bool:
    """Whether `model` is PEFT prompt learning (prefix tuning and kin), which builds the cache itself."""
    peft_config = getattr(model, "active_peft_config", None)
    return peft_config is not None and bool(getattr(peft_config, "is_prompt_learning", False))


def prompt_groups(ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(first, inverse) for the prompt columns (B, P): the row index of one copy of each distinct
    prompt (U,), and for every row the position of its prompt among them (B,). Rows in any order."""
    keys = torch.cat([ids, attention_mask.to(ids.dtype)], dim=1)  # a pad id may also be a real token
    _, inverse = torch.unique(keys, dim=0, return_inverse=True)
    count = int(inverse.max()) + 1
    rows = torch.arange(ids.shape[0], device=ids.device)
    first = torch.full((count,), ids.shape[0], dtype=torch.long, device=ids.device)
    return first.scatter_reduce(0, inverse, rows, "amin"), inverse


def response_logits(model: Any, roll: Any, share: bool = False) -> torch.Tensor:
    """(B, R, V) logits predicting each response token (position t predicts token t + 1). Position
    ids count real tokens only, as generate's do. With `share`, each distinct prompt runs once
    (with gradients, which then reach it from every response of its group) and the responses run
    on its cache; without, one pass over whole sequences. The passes taken depend on `share` alone,
    never on the data: under ZeRO-3 each forward is a collective, and every process must run as
    many as the others."""
    width = roll.sequences.shape[1] - roll.prompt_width
    positions = position_ids_from_mask(roll.attention_mask)
    if not share:
        return model(input_ids=roll.sequences, attention_mask=roll.attention_mask, position_ids=positions,
                     use_cache=False, logits_to_keep=width + 1).logits[:, :-1]
    p = roll.prompt_width
    first, inverse = prompt_groups(roll.sequences[:, :p], roll.attention_mask[:, :p])
    out = model(input_ids=roll.sequences[first, :p], attention_mask=roll.attention_mask[first, :p],
                position_ids=positions[first, :p], use_cache=True, logits_to_keep=1)
    last = out.logits[inverse]  # the prompt's last position predicts the first response token
    cache = out[cache_arg()]
    cache.reorder_cache(inverse)  # each row gets its prompt's keys and values (indexing: differentiable)
    rest = model(input_ids=roll.sequences[:, p:], attention_mask=roll.attention_mask, position_ids=positions[:, p:],
                 use_cache=True, **{cache_arg(): cache}).logits
    return torch.cat([last, rest[:, :-1]], dim=1)  # the last token's logits predict nothing scored


@torch.no_grad()
def shared_prefill(model: Any, ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, Any]:
    """generate()'s keyword arguments for left-padded prompts (B, P) with repeats: every distinct
    prompt but its last token run once, the cache given to each of its rows (generate runs the last
    token itself, as a cache must leave it at least one). Empty when P is 1 (a chat template never
    leaves a prompt that short; under ZeRO-3 every process must take the same branch)."""
    if ids.shape[1] < 2:
        return {}
    first, inverse = prompt_groups(ids, attention_mask)
    out = model(input_ids=ids[first, :-1], attention_mask=attention_mask[first, :-1],
                position_ids=position_ids_from_mask(attention_mask[first, :-1]), use_cache=True, logits_to_keep=1)
    cache = out[cache_arg()]
    cache.reorder_cache(inverse)
    return {cache_arg(): cache}
