"""Tiny models built in code: a byte-level BPE tokenizer trained on a given corpus, with a chat
template, and a small randomly initialised Llama, Qwen2, Gemma or GPT-2. For tests and the demo; nothing is
downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch

SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|system|>", "<|user|>", "<|assistant|>"]

# Role tokens are single special tokens, so a turn boundary never merges with the text around it.
# Newlines right after a block tag are written as {{ '\\n' }}: transformers renders with trim_blocks.
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% else %}{{ '\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

DEFAULT_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Instructions: answer the question. Question: what is two plus two? Answer: four.",
    "Please write a short poem about the sea, the sky and the wind.",
    "Reverse the word apple: elppa. Upper-case the word pear: PEAR.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20.",
    "User asked a question and the assistant answered it helpfully and briefly.",
]


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 512) -> Any:
    """A byte-level BPE tokenizer (one token per digit) wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(corpus), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", bos_token="<|bos|>",
                                   eos_token="<|eos|>", additional_special_tokens=SPECIAL_TOKENS[3:])
    fast.chat_template = TINY_CHAT_TEMPLATE
    return fast


def tiny_config(arch: str, vocab_size: int, hidden: int, layers: int, heads: int, max_positions: int,
                tokenizer: Any) -> Any:
    from transformers import GemmaConfig, GPT2Config, LlamaConfig, Qwen2Config

    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    if arch == "llama":
        return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 4,
                           num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                           max_position_embeddings=max_positions, tie_word_embeddings=False, **ids)
    if arch == "qwen2":
        return Qwen2Config(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 4,
                           num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                           max_position_embeddings=max_positions, tie_word_embeddings=True, **ids)
    if arch == "gemma":
        return GemmaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 4,
                           num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=1,
                           head_dim=hidden // heads, max_position_embeddings=max_positions, **ids)
    if arch == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_embd=hidden, n_layer=layers, n_head=heads,
                          n_positions=max_positions, **ids)
    raise ValueError(f"unknown tiny architecture '{arch}'; expected llama, qwen2, gemma or gpt2")


def build_tiny_model(out_dir: str | Path | None = None, corpus: Iterable[str] | None = None, arch: str = "llama",
                     vocab_size: int = 512, hidden: int = 64, layers: int = 2, heads: int = 4,
                     max_positions: int = 512, seed: int = 0) -> tuple[Any, Any]:
    """(model, tokenizer), saved as a standard HF directory when out_dir is given."""
    from transformers import AutoModelForCausalLM

    tokenizer = train_tokenizer(corpus if corpus is not None else DEFAULT_CORPUS, vocab_size)
    # The trainer learns only the merges the corpus supports, so the real vocabulary may be smaller.
    config = tiny_config(arch, len(tokenizer), hidden, layers, heads, max_positions, tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    if out_dir is not None:
        model.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
    return model, tokenizer
