"""Multinomial sampling with the KV cache, by hand: the loop `generate()` runs for plain sampling,
without its per-step bookkeeping, and with a cache that grows in place instead of being copied
whole at every token (DynamicCache concatenates each layer's keys and values per step).

It draws exactly what `generate(do_sample=True)` draws under the same seed: the same forward passes
(position ids from the mask, the logits of the last position in fp32), HF's own temperature,
top-k and top-p warpers in generate's order, one `torch.multinomial` per step, the pad token after
EOS, and a stop once every row has ended (tests/test_sampling.py checks token equality). Under
ZeRO-3 or FSDP with several processes each forward pass is a collective, so, as generate's
`synced_gpus`, no process stops before all have ended.

Models it cannot drive the same way (PEFT prompt learning, which owns the cache; a forward without
position ids) go through `generate()`; `can_sample(model)` says which.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch

from alignkit.models.generate import position_ids_from_mask
from alignkit.rl.shared_prompt import cache_arg, prompt_learning


def base_model(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (itself otherwise)."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


@functools.cache
def _forward_takes(cls: type, name: str) -> bool:
    return name in inspect.signature(cls.forward).parameters


def can_sample(model: Any) -> bool:
    """Whether `sample_tokens` can drive `model`: not PEFT prompt learning (prefix tuning builds the
    cache itself) and a forward that takes position ids and a cache."""
    if prompt_learning(model):
        return False
    cls = type(base_model(model))
    return _forward_takes(cls, "position_ids") and _forward_takes(cls, cache_arg())


def warpers(temperature: float, top_p: float, top_k: int) -> list[Any]:
    """HF's sampling warpers for these settings, in generate's order (temperature, top-k, top-p)."""
    from transformers.generation.logits_process import (TemperatureLogitsWarper, TopKLogitsWarper,
                                                        TopPLogitsWarper)

    out: list[Any] = []
    if temperature != 1.0:
        out.append(TemperatureLogitsWarper(temperature))
    if top_k:
        out.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
    if top_p < 1.0:
        out.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
    return out


def synced(model: Any) -> bool:
    """Whether every process must take the same number of forward passes (generate's synced_gpus)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return False
    if torch.distributed.get_world_size() < 2:
        return False
    from transformers.integrations import is_deepspeed_zero3_enabled

    try:
        from transformers.distributed.fsdp import is_fsdp_managed_module
    except ImportError:  # older transformers
        from transformers.integrations.fsdp import is_fsdp_managed_module
    return bool(is_deepspeed_zero3_enabled() or is_fsdp_managed_module(model))


def _reserving_layer() -> type | None:
    """A DynamicLayer whose keys and values live in a buffer with room for the tokens still to come:
    `update` writes the new positions in place and hands back a view, where DynamicLayer copies the
    whole cache into a new tensor (torch.cat) at every step. None if this transformers has no
    DynamicLayer (the cache is then left as the model made it)."""
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:
        return None

    class ReservedLayer(DynamicLayer):
        def __init__(self, keys: torch.Tensor, values: torch.Tensor, capacity: int) -> None:
            super().__init__()
            n = keys.shape[-2]
            self.key_buffer = keys.new_empty(*keys.shape[:2], capacity, keys.shape[-1])
            self.value_buffer = values.new_empty(*values.shape[:2], capacity, values.shape[-1])
            self.key_buffer[:, :, :n] = keys
            self.value_buffer[:, :, :n] = values
            self.keys, self.values = self.key_buffer[:, :, :n], self.value_buffer[:, :, :n]
            self.device, self.is_initialized = keys.device, True

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
                   ) -> tuple[torch.Tensor, torch.Tensor]:
            start = self.keys.shape[-2]
            end = start + key_states.shape[-2]
            if end > self.key_buffer.shape[-2]:  # more than was reserved: grow as DynamicLayer does
                return super().update(key_states, value_states, *args, **kwargs)
            self.key_buffer[:, :, start:end] = key_states
            self.value_buffer[:, :, start:end] = value_states
            self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]
            return self.keys, self.values

    return ReservedLayer


_RESERVED = _reserving_layer()


def reserve(cache: Any, capacity: int) -> None:
    """Give each plain DynamicLayer of `cache` room for `capacity` positions in all (in place).
    Layers of other kinds (sliding windows, linear attention) are left as they are."""
    if _RESERVED is None or not isinstance(getattr(cache, "layers", None), list):
        return
    from transformers.cache_utils import DynamicLayer

    for i, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer and layer.is_initialized and layer.keys.dim() == 4 \
                and layer.keys.shape[-2] < capacity:
            cache.layers[i] = _RESERVED(layer.keys, layer.values, capacity)


@torch.no_grad()
def sample_tokens(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
                  eos_id: int | None, pad_id: int, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
                  cache: Any = None) -> torch.Tensor:
    """(B, <= max_new_tokens) sampled token ids for left-padded prompts (B, P): pad after each
    row's EOS, fewer columns when every row ended early (as generate returns them). `cache`: the
    keys and values of every prompt column but the last (rl/shared_prompt.shared_prefill); the
    last column then starts the loop, as generate does with a given cache."""
    batch = input_ids.shape[0]
    positions = position_ids_from_mask(attention_mask)
    step_ids, step_positions = (input_ids, positions) if cache is None else (input_ids[:, -1:], positions[:, -1:])
    mask = attention_mask
    keep = {"logits_to_keep": 1} if _forward_takes(type(base_model(model)), "logits_to_keep") else {}
    processors = warpers(temperature, top_p, top_k)
    in_step = synced(model)
    unfinished = torch.ones(batch, dtype=torch.bool, device=input_ids.device)
    ones = torch.ones(batch, 1, dtype=mask.dtype, device=mask.device)
    tokens: list[torch.Tensor] = []
    alive = True
    for step in range(max_new_tokens):
        given = {} if cache is None else {cache_arg(): cache}
        out = model(input_ids=step_ids, attention_mask=mask, position_ids=step_positions, use_cache=True,
                    **given, **keep)
        if step == 0:  # the cache the model made or filled, given room for what is to come
            cache = out[cache_arg()]
            reserve(cache, mask.shape[1] + max_new_tokens)
        if alive:
            scores = out.logits[:, -1].to(dtype=torch.float32)
            for warp in processors:
                scores = warp(input_ids, scores)  # these warpers read only the scores
            chosen = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
        else:  # ended here, kept stepping for the other processes (generate samples nothing then)
            chosen = torch.full((batch,), pad_id, dtype=input_ids.dtype, device=input_ids.device)
        if eos_id is not None:
            chosen = torch.where(unfinished, chosen, torch.full_like(chosen, pad_id))
            unfinished &= chosen != eos_id
        tokens.append(chosen)
        alive = bool(unfinished.any())
        done = not alive
        if in_step:  # stop only when every process has: each forward is a collective
            flag = torch.tensor(0.0 if done else 1.0, device=input_ids.device)
            torch.distributed.all_reduce(flag)
            done = float(flag) == 0.0
        if done or step == max_new_tokens - 1:
            break
        step_ids = chosen[:, None]
        mask = torch.cat([mask, ones], dim=1)
        step_positions = step_positions[:, -1:] + 1
    return torch.stack(tokens, dim=1)
