"""Rollouts for PPO: batched sampling with a KV cache, response masks, and log-probs recomputed with
the training forward pass (so the PPO ratio starts at exactly 1).

Layout: prompts are left-padded to a common width P, responses follow, right-padded to R:
sequences (B, P + R). `response_mask` (B, R) is 1 on generated tokens up to and including the first
EOS; tokens after EOS and padding are 0 everywhere downstream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from alignkit.models.generate import encode_prompts
from alignkit.rl.sampling import can_sample, sample_tokens
from alignkit.rl.shared_prompt import cache_arg, response_logits, shared_prefill



@dataclass
class Rollout:
    sequences: torch.Tensor      # (B, P + R) token ids
    attention_mask: torch.Tensor  # (B, P + R) 1 on real prompt tokens and on response tokens kept
    prompt_width: int            # P
    response_mask: torch.Tensor  # (B, R)
    ended: torch.Tensor          # (B,) True where the response stopped with EOS within the limit

    @property
    def responses(self) -> torch.Tensor:
        return self.sequences[:, self.prompt_width:]


def select(rollout: Rollout, idx: torch.Tensor | slice) -> Rollout:
    """Rows `idx` of a rollout without the columns that are padding in every one of them: prompt
    columns left of all rows' first real token, response columns after all rows' last kept token.
    Exact: position ids count real tokens only, and causal attention never looks right; it saves
    the forward and backward passes their share of padding."""
    att = rollout.attention_mask[idx]
    p = rollout.prompt_width
    real = att[:, :p].any(0)
    first = int(real.long().argmax()) if bool(real.any()) else p - 1
    mask = rollout.response_mask[idx]
    width = max(1, int(mask.sum(1).max()))
    end = p + width
    return Rollout(rollout.sequences[idx][:, first:end], att[:, first:end], p - first, mask[:, :width],
                   rollout.ended[idx])


def concat_rollouts(rollouts: list[Rollout], pad_id: int) -> Rollout:
    """One rollout of several (sampled with the same response width): prompts left-padded to the
    widest. Exact: padding is masked out and position ids count real tokens only."""
    if len(rollouts) == 1:
        return rollouts[0]
    width = max(r.prompt_width for r in rollouts)
    pad = torch.nn.functional.pad
    return Rollout(torch.cat([pad(r.sequences, (width - r.prompt_width, 0), value=pad_id) for r in rollouts]),
                   torch.cat([pad(r.attention_mask, (width - r.prompt_width, 0), value=0) for r in rollouts]),
                   width, torch.cat([r.response_mask for r in rollouts]), torch.cat([r.ended for r in rollouts]))


def decode_responses(tokenizer: Any, rollout: Rollout) -> list[str]:
    """The rollout's responses as text: the kept tokens (EOS and after dropped), stripped."""
    return [tokenizer.decode(row[m.bool()].tolist(), skip_special_tokens=True).strip()
            for row, m in zip(rollout.responses.cpu(), rollout.response_mask.cpu())]


def response_mask_from(responses: torch.Tensor, eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask, ended): 1 up to and including the first EOS of each row; ended where an EOS exists."""
    is_eos = responses == eos_id
    after_eos = (torch.cumsum(is_eos.long(), dim=1) - is_eos.long()) > 0  # strictly after the first EOS
    return (~after_eos).long(), is_eos.any(dim=1)


@torch.no_grad()
def sample_rollout(model: Any, tokenizer: Any, conversations: list[list[dict[str, str]]], max_new_tokens: int,
                   temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, share: bool = False) -> Rollout:
    """Sample one response per conversation (chat template with the generation prompt, as in SFT).
    share: a conversation that comes several times (a group) has its prompt run once, its cache
    shared by its rows (rl/shared_prompt.py)."""
    enc = encode_prompts(tokenizer, conversations)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    ids, attention = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    cache = shared_prefill(model, ids, attention) if share else {}
    if can_sample(model):  # generate's draws, without its per-step overhead (rl/sampling.py)
        new = sample_tokens(model, ids, attention, max_new_tokens, tokenizer.eos_token_id, tokenizer.pad_token_id,
                            temperature, top_p, top_k, cache=cache.get(cache_arg()))
        out = torch.cat([ids, new], dim=1)
    else:
        from transformers import GenerationConfig

        # A config of our own, not the model's generation_config: a shipped repetition penalty or
        # n-gram ban would change the sampling distribution away from softmax(logits / T), which the
        # PPO ratio and the KL assume.
        config = GenerationConfig(do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k,
                                  max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                  eos_token_id=tokenizer.eos_token_id, repetition_penalty=1.0, no_repeat_ngram_size=0)
        out = model.generate(input_ids=ids, attention_mask=attention, generation_config=config, **cache)
    model.train(was_training)
    width = enc["input_ids"].shape[1]
    responses = out[:, width:]
    if responses.shape[1] < max_new_tokens:  # every row stopped early: pad to the fixed width
        pad = torch.full((responses.shape[0], max_new_tokens - responses.shape[1]), tokenizer.pad_token_id,
                         dtype=responses.dtype, device=responses.device)
        responses = torch.cat([responses, pad], dim=1)
    mask, ended = response_mask_from(responses, tokenizer.eos_token_id)
    sequences = torch.cat([out[:, :width], responses], dim=1)
    attention = torch.cat([enc["attention_mask"].to(device), mask], dim=1)
    return Rollout(sequences, attention, width, mask, ended)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0,
                   with_all: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """(B, T) log-probs of `tokens` under logits (B, T, V) divided by the sampling temperature, as
    generate samples them; with_all: also the (B, T, V) log-probs of every token (for the entropy,
    without a second log-softmax)."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    taken = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return (taken, logp) if with_all else taken


def response_logprobs(model: Any, rollout: Rollout, temperature: float = 1.0, share: bool = False) -> torch.Tensor:
    """(B, R) log-probs of the sampled response tokens under `model` at the sampling temperature;
    0 where the response mask is 0. Position ids count real tokens only, as generate's do, so the
    numbers match what was sampled. share: a repeated prompt runs once (rl/shared_prompt.py)."""
    logits = response_logits(model, rollout, share)
    return token_logprobs(logits, rollout.responses, temperature) * rollout.response_mask
