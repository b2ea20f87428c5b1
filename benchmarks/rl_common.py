"""What the RL benchmarks (bench_ppo.py, bench_grpo.py) share: their prompts, the versions they
report, alignkit's token ids for a prompt (to check both sides tokenise alike), a CPU meter that
counts a parent's finished children as its own, and the per-iteration timer of each side."""

from __future__ import annotations

import os
import platform
import random
import time
from collections import defaultdict
from pathlib import Path

import torch

from common import TEMPLATES, WORDS  # benchmarks/common.py
from contention import cpu_used  # benchmarks/contention.py


def make_prompts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(TEMPLATES).format(a=rng.choice(WORDS), b=rng.choice(WORDS)) for _ in range(n)]


def versions() -> dict[str, str]:
    import accelerate
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "accelerate": accelerate.__version__}


def prompt_ids_alignkit(work: Path, prompts: list[str]) -> list[list[int]]:
    """alignkit's token ids for each prompt alone (its rollout encoder, padding removed)."""
    from transformers import AutoTokenizer

    from alignkit.models.generate import encode_prompts

    tokenizer = AutoTokenizer.from_pretrained(str(work / "policy"))
    out = []
    for p in prompts:
        enc = encode_prompts(tokenizer, [[{"role": "user", "content": p}]])
        out.append([int(t) for t, m in zip(enc["input_ids"][0], enc["attention_mask"][0]) if m])
    return out


class ChildMeter:
    """ContentionMeter that counts this process's finished children (the two sides) as its own."""

    def __init__(self) -> None:
        self.cpu0, self.kids0, self.t0 = cpu_used(), sum(os.times()[2:4]), time.time()

    def others(self) -> float:
        (all1, mine1), wall = cpu_used(), time.time() - self.t0
        kids = sum(os.times()[2:4]) - self.kids0
        return max(0.0, (all1 - self.cpu0[0]) - (mine1 - self.cpu0[1]) - kids) / wall


class Split:
    """Seconds spent in named parts of the current iteration; `close()` at the iteration's end."""

    def __init__(self) -> None:
        self.cur: dict[str, float] = defaultdict(float)
        self.marks: dict[str, float] = {}
        self.steps: list[dict[str, float]] = []

    def timed(self, fn, key: str, when=None):
        def wrapper(*a, **kw):
            if when is not None and not when():
                return fn(*a, **kw)
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.cur[key] += time.perf_counter() - t0
        return wrapper

    def mark_first(self, fn, name: str, when=None):
        """Remember when fn is first entered in this iteration (where `when()` holds)."""
        def wrapper(*a, **kw):
            if (when is None or when()) and name not in self.marks:
                self.marks[name] = time.perf_counter()
            return fn(*a, **kw)
        return wrapper

    def mark_last(self, fn, name: str):
        """Remember when fn last returned in this iteration."""
        def wrapper(*a, **kw):
            out = fn(*a, **kw)
            self.marks[name] = time.perf_counter()
            return out
        return wrapper

    def close(self) -> None:
        row = dict(self.cur)
        if "update_start" in self.marks and "update_end" in self.marks:
            row["update_s"] = self.marks["update_end"] - self.marks["update_start"]
        self.steps.append(row)
        self.cur, self.marks = defaultdict(float), {}
