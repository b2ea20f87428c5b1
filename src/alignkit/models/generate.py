"""Generate responses to chat prompts: the chat template as in training, batched, left-padded."""

from __future__ import annotations

from typing import Any

import torch

from alignkit.data.templates import render


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that count real tokens only, as generate's do: a left-padded sequence is seen
    exactly as it is alone (models with learned absolute positions, like GPT-2, do not derive them
    from the mask)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def encode_texts(tokenizer: Any, texts: list[str], add_special_tokens: bool = False) -> dict[str, torch.Tensor]:
    """Prompt strings tokenised and left-padded, so new tokens follow every prompt directly."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens)
    finally:
        tokenizer.padding_side = side


def encode_prompts(tokenizer: Any, conversations: list[list[dict[str, str]]]) -> dict[str, torch.Tensor]:
    """Generation prompts (chat template with the generation prompt, as in training), left-padded."""
    return encode_texts(tokenizer, [render(tokenizer, c, add_generation_prompt=True) for c in conversations])


@torch.no_grad()
def generate_texts(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int = 64, temperature: float = 0.0,
                   top_p: float = 1.0, batch_size: int = 16, add_special_tokens: bool = False,
                   seed: int | None = None) -> list[tuple[str, bool]]:
    """(text, cut_off) for each prompt string, generated in batches: decoding stops at EOS and the
    text after it is discarded; cut_off is True when the token limit came first. temperature 0
    decodes greedily; with `seed`, each batch reseeds with seed + its first index, so a batch's
    samples do not depend on what was generated before it."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
    out: list[tuple[str, bool]] = []
    try:
        for i in range(0, len(prompts), batch_size):
            enc = encode_texts(tokenizer, prompts[i:i + batch_size], add_special_tokens).to(device)
            if seed is not None:
                torch.manual_seed(seed + i)
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id, **sampling)
            for row in ids[:, enc["input_ids"].shape[1]:].tolist():
                ended = tokenizer.eos_token_id in row
                if ended:
                    row = row[: row.index(tokenizer.eos_token_id)]
                out.append((tokenizer.decode(row, skip_special_tokens=True), not ended))
    finally:
        model.train(was_training)
    return out


def generate_responses(model: Any, tokenizer: Any, conversations: list[list[dict[str, str]]],
                       max_new_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
                       batch_size: int = 16) -> list[str]:
    """One response per conversation (each a list of messages ending with a user turn), through the
    chat template. temperature 0 decodes greedily. Decoding stops at EOS; the text after it is discarded.
    """
    return responses_and_cutoffs(model, tokenizer, conversations, max_new_tokens, temperature, top_p, batch_size)[0]


def responses_and_cutoffs(model: Any, tokenizer: Any, conversations: list[list[dict[str, str]]],
                          max_new_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
                          batch_size: int = 16) -> tuple[list[str], list[bool]]:
    """generate_responses' responses, and for each whether the token limit came before EOS (an answer
    cut off: a checker reading it judges a fragment)."""
    prompts = [render(tokenizer, c, add_generation_prompt=True) for c in conversations]
    out = generate_texts(model, tokenizer, prompts, max_new_tokens, temperature, top_p, batch_size)
    return [text.strip() for text, _ in out], [cut for _, cut in out]


def sample_for_ranking(model: Any, tokenizer: Any, rows: list[dict[str, Any]], k: int = 4, temperature: float = 1.0,
                       max_new_tokens: int = 64, rounds: int = 3) -> tuple[list[dict[str, Any]], int]:
    """k different sampled responses per prompt row ({"prompt": str, ...}; other fields kept).

    Duplicates are resampled up to `rounds` times; a prompt left with fewer than 2 different
    responses is dropped. Returns (rows with "responses", number dropped).
    """
    pools: list[list[str]] = [[] for _ in rows]
    for _ in range(rounds):
        need = [i for i, pool in enumerate(pools) if len(pool) < k]
        if not need:
            break
        convs = [[{"role": "user", "content": rows[i]["prompt"]}] for i in need for _ in range(k)]
        answers = generate_responses(model, tokenizer, convs, max_new_tokens, temperature=temperature)
        for n, i in enumerate(need):
            for answer in answers[n * k:(n + 1) * k]:
                if answer not in pools[i] and len(pools[i]) < k:
                    pools[i].append(answer)
    out = [{**row, "responses": pool} for row, pool in zip(rows, pools) if len(pool) >= 2]
    return out, len(rows) - len(out)
