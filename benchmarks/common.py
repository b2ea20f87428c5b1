"""What the benchmarks share: the words and prompt templates of their synthetic data, the pairwise
rows of the preference benchmarks (reward model, DPO), and the tiny Llama every side-by-side run
trains (so every benchmark draws from the same vocabulary and model)."""

import random
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


GOOD, BAD = WORDS[: len(WORDS) // 2], WORDS[len(WORDS) // 2:]


def make_rows(n: int, seed: int) -> list[dict[str, str]]:
    """Pairwise rows; chosen from the first half of WORDS, rejected from the second, 5..60 words each."""
    rng = random.Random(seed)
    say = lambda pool: " ".join(rng.choices(pool, k=rng.randint(5, 60))).capitalize() + "."  # noqa: E731
    return [{"prompt": rng.choice(TEMPLATES).format(a=rng.choice(WORDS), b=rng.choice(WORDS)),
             "chosen": say(GOOD), "rejected": say(BAD)} for _ in range(n)]


def as_chat(row: dict[str, str]) -> dict[str, list]:
    """The same row as TRL's conversational preference format (explicit prompt)."""
    return {"prompt": [{"role": "user", "content": row["prompt"]}],
            "chosen": [{"role": "assistant", "content": row["chosen"]}],
            "rejected": [{"role": "assistant", "content": row["rejected"]}]}
