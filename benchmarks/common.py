"""What the benchmarks share: the words and prompt templates of their synthetic data, and the tiny
Llama every side-by-side run trains (so every benchmark draws from the same vocabulary and model)."""

from pathlib import Path

WORDS = ("the a model answer question data river stone light quick slow green blue red small large "
         "city garden window table letter number story music water fire cloud morning evening friend "
         "teacher student market road bridge mountain forest ocean island winter summer spring autumn "
         "bread apple orange coffee paper pencil clock train ship plane door house school library "
         "simple careful bright quiet happy strong gentle clear warm cold early late open close "
         "write read explain build carry watch listen follow remember change improve describe "
         "because while after before under over between around through with without and or but").split()
TEMPLATES = ("Describe the {a} near the {b}.", "Explain why a {a} needs a {b}.",
             "Write a short note about the {a} and the {b}.", "List what you know about {a}.",
             "Which is better, the {a} or the {b}?", "Rewrite this sentence more simply: the {a} is {b}.")


def bench_llama(out_dir: Path, corpus: list[str], seed: int = 0):
    """(model, tokenizer): the benchmarks' ~4.5M-parameter Llama (hidden 256, 4 layers, a 512-token
    BPE trained on `corpus`), saved to out_dir as a plain HF directory both sides load."""
    from alignkit.models import build_tiny_model

    return build_tiny_model(out_dir, corpus=corpus, arch="llama", vocab_size=512, hidden=256, layers=4, heads=4,
                            max_positions=512, seed=seed)
