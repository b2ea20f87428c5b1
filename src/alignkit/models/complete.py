"""Text in, text out, from a local model or an OpenAI-compatible server, for the data commands that
generate (Self-Instruct): plain continuations of a prompt, and answers through the chat template.

Both return (text, cut_off) pairs: cut_off is True when generation stopped at the token limit rather
than at the end of sequence, so the caller can drop a half-written line instead of keeping it.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from alignkit.data.templates import render
from alignkit.models.generate import generate_texts
from alignkit.errors import AlignkitError, ConfigError


class LocalLM:
    """A causal LM from a directory or hub id (alignkit.models.load_causal_lm), generating in batches."""

    def __init__(self, path: str, batch_size: int = 16, device: str | None = None) -> None:
        from alignkit.models import load_causal_lm, load_tokenizer

        self.tokenizer = load_tokenizer(path)
        self.model = load_causal_lm(path)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()
        self.batch_size = batch_size

    def complete(self, prompts: list[str], max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                 seed: int = 0) -> list[tuple[str, bool]]:
        """The continuation of each plain-text prompt (no chat template; the tokenizer's BOS added)."""
        return generate_texts(self.model, self.tokenizer, prompts, max_new_tokens, temperature, top_p, self.batch_size,
                              add_special_tokens=True, seed=seed)

    def answer(self, requests: list[str], max_new_tokens: int, temperature: float = 0.0,
               seed: int = 0) -> list[tuple[str, bool]]:
        """The model's reply to each request as one user turn, through its chat template."""
        prompts = [render(self.tokenizer, [{"role": "user", "content": r}], add_generation_prompt=True) for r in requests]
        return generate_texts(self.model, self.tokenizer, prompts, max_new_tokens, temperature, 1.0, self.batch_size,
                              seed=seed)


class EndpointLM:
    """A model behind an OpenAI-compatible URL: /completions for continuations, /chat/completions for
    answers; `concurrency` requests in flight; the seed is sent where the server honours it."""

    def __init__(self, url: str, model: str, key_env: str = "OPENAI_API_KEY", concurrency: int = 8) -> None:
        try:
            import openai
        except ImportError:
            raise ConfigError("endpoint.url needs the openai client: pip install 'alignkit[openai]'") from None
        self.url, self.model, self.concurrency = url, model, concurrency
        self.client = openai.OpenAI(base_url=url, api_key=os.environ.get(key_env) or "none", max_retries=3)
        self.errors = (openai.APIError,)

    def complete(self, prompts: list[str], max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                 seed: int = 0) -> list[tuple[str, bool]]:
        def one(k: int) -> tuple[str, bool]:
            r = self.client.completions.create(model=self.model, prompt=prompts[k], max_tokens=max_new_tokens,
                                               temperature=temperature, top_p=top_p, seed=seed + k)
            return r.choices[0].text, r.choices[0].finish_reason == "length"

        return self._map(one, len(prompts))

    def answer(self, requests: list[str], max_new_tokens: int, temperature: float = 0.0,
               seed: int = 0) -> list[tuple[str, bool]]:
        def one(k: int) -> tuple[str, bool]:
            r = self.client.chat.completions.create(model=self.model, messages=[{"role": "user", "content": requests[k]}],
                                                    max_tokens=max_new_tokens, temperature=temperature, seed=seed + k)
            return r.choices[0].message.content or "", r.choices[0].finish_reason == "length"

        return self._map(one, len(requests))

    def _map(self, fn: Any, n: int) -> list[tuple[str, bool]]:
        try:
            with ThreadPoolExecutor(self.concurrency) as pool:
                return list(pool.map(fn, range(n)))
        except self.errors as exc:
            raise AlignkitError(f"endpoint {self.url} (model {self.model}): {type(exc).__name__}: {exc}") from None
