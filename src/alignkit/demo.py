"""`alignkit demo` (what `make demo` runs): a tiny model learns to follow instructions, end to end.

This is the first, small version of the embedded demo: a tiny Llama with a BPE tokenizer is built in
code, fine-tuned with the SFT stage on three instruction tasks (reverse a word, upper-case it, count
its letters) written in several phrasings, and scored by exact match before and after, on the
training phrasings and on one phrasing held out of training. Everything runs on CPU in about a
minute and writes its run directory (metrics, checkpoints, model) under runs/demo.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

WORDS = ("apple pear plum grape melon lemon mango peach cherry berry kiwi lime fig date olive bean corn "
         "rice wheat oat sand rock tree leaf bird fish frog wolf bear deer lion goat duck swan crow hawk "
         "moon star rain snow wind fire salt milk tea cake bread soup").split()
TASKS = {
    "reverse": (lambda w: w[::-1], ["Reverse the word {w}.", "Please reverse {w}.", "Write {w} backwards.",
                                    "Spell {w} in reverse."]),
    "upper": (lambda w: w.upper(), ["Upper-case the word {w}.", "Write {w} in capitals.", "Make {w} upper case.",
                                    "Capitalise every letter of {w}."]),
    "count": (lambda w: str(len(w)), ["How many letters are in {w}?", "Count the letters of {w}.",
                                      "What is the length of {w}?", "Number of letters in {w}?"]),
}
HELD_OUT = 3  # the fourth phrasing of each task is never trained on


def make_rows(phrasings: range) -> list[dict]:
    return [{"instruction": templates[i].format(w=w), "input": "", "output": fn(w), "task": task}
            for task, (fn, templates) in TASKS.items() for i in phrasings for w in WORDS]


def accuracy(model, tokenizer, rows: list[dict]) -> float:
    from alignkit.models.generate import generate_responses

    answers = generate_responses(model, tokenizer, [[{"role": "user", "content": r["instruction"]}] for r in rows],
                                 max_new_tokens=12, batch_size=64)
    return sum(a == r["output"] for a, r in zip(answers, rows)) / len(rows)


def run_demo(argv: list[str]) -> int:
    from rich.table import Table

    from alignkit.config import SFTConfig, load_config
    from alignkit.models import build_tiny_model, load_causal_lm, load_tokenizer
    from alignkit.stages.sft import run_sft
    from alignkit.training.run import console, quiet_libraries

    quiet_libraries()
    root = Path(argv[0] if argv else "runs/demo")
    root.mkdir(parents=True, exist_ok=True)
    train_rows, held_rows = make_rows(range(HELD_OUT)), make_rows(range(HELD_OUT, HELD_OUT + 1))
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train_rows))
    started = time.time()

    base = root / "base"
    if not (base / "config.json").exists():
        console.print("[bold]1/3[/] building a tiny Llama and its tokenizer")
        corpus = [f"{r['instruction']} {r['output']}" for r in train_rows + held_rows]
        random.Random(0).shuffle(corpus)
        build_tiny_model(base, corpus, arch="llama", vocab_size=512, hidden=128, layers=2, heads=4)
    tok = load_tokenizer(base)
    sample = random.Random(1).sample(train_rows, 60)
    before = {"train phrasings": accuracy(load_causal_lm(base), tok, sample),
              "held-out phrasing": accuracy(load_causal_lm(base), tok, held_rows)}

    console.print("[bold]2/3[/] supervised fine-tuning")
    cfg = load_config(SFTConfig, None, [
        f"model.path={base}", f"data.train_path={root / 'train.jsonl'}", f"output_dir={root / 'sft'}",
        "data.max_length=128", "data.eval_fraction=0.05", "optim.lr=3e-3", "optim.warmup_steps=20",
        "train.batch_size=8", "train.max_steps=250", "train.eval_every=50", "checkpoint.save_every=100",
        "resume=true",
    ])
    model_dir = run_sft(cfg)

    console.print("[bold]3/3[/] scoring by exact match")
    tuned = load_causal_lm(model_dir)
    after = {"train phrasings": accuracy(tuned, tok, sample), "held-out phrasing": accuracy(tuned, tok, held_rows)}
    table = Table(title="Instruction following, exact match")
    table.add_column("prompts")
    table.add_column("base model", justify="right")
    table.add_column("after SFT", justify="right")
    for key in before:
        table.add_row(key, f"{before[key]:.0%}", f"{after[key]:.0%}")
    console.print(table)
    from alignkit.models.generate import generate_responses

    for row in held_rows[:: len(held_rows) // 4][:4]:
        (answer,) = generate_responses(tuned, tok, [[{"role": "user", "content": row["instruction"]}]], 12)
        console.print(f"  [dim]{row['instruction']}[/] -> {answer!r} (expected {row['output']!r})")
    console.print(f"run directory: {root} (metrics: {root / 'sft' / 'metrics.jsonl'}); {time.time() - started:.0f} s")
    return 0
