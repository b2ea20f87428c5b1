"""SFT speed, side by side: alignkit `run_sft` vs TRL `SFTTrainer`, in one process, on CPU.

Held equal on every row: the model (one tiny Llama, ~4.5M parameters, built once and loaded from the
same directory), the data (the same seeded Alpaca-style rows; alignkit reads them as JSONL, TRL as
the equivalent conversational prompt/completion, so both apply the same chat template and train on
the response tokens only), the per-device batch size (rows per step), max_length, optimizer steps,
learning rate, fp32, and torch's thread count.

Not held equal, on purpose: what a "row" holds. alignkit packs several samples into each row of up
to max_length tokens (data.packing=auto); TRL by default pads each batch to its longest sample. So
in the same number of steps the two see different numbers of samples, and the comparison is on
*useful tokens per second*: the tokens of real samples trained on (their tokenised lengths; padding
not counted; prompt and response tokens alike, the same rule on both sides), divided by the wall
time of the training loop. The alignkit row with packing=off shows
how much of the difference is packing; the optional TRL row with packing=True (its "bfd" strategy,
which TRL runs padding-free: each batch flattened into one sequence) is TRL's own packed mode.

Timing: the first optimizer step of every run is a warm-up and is not counted; the clock runs from
the end of step 1 to the end of the last step (alignkit: the `time` of metrics.jsonl rows, logged
every step, whose `tokens` and `samples` columns give the counts; TRL: a callback at on_step_end and a
counting wrapper around its collator). Setup (tokenising, model load) and saving are outside
(`total_s` in the JSON includes them). The loss column is the mean training loss over all steps, a
sanity check that every row trains on responses only (~ln(vocab) at the start), not a quality score.
Timings on a shared 2-core machine are noisy: with another process busy, prefer --threads 1.

    python benchmarks/bench_sft.py                 # 30 steps, batch 8, max_length 256, 2,000 rows
    python benchmarks/bench_sft.py --quick         # a smoke run of a few steps
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch

from common import WORDS, bench_llama  # benchmarks/common.py
from contention import ContentionMeter  # benchmarks/contention.py, beside this script

TEMPLATES = ("Describe the {a} near the {b}.", "Explain why a {a} needs a {b}.",
             "Write a short note about the {a} and the {b}.", "List what you know about {a}.",
             "Summarise the text below.", "Rewrite this sentence more simply.")


def make_rows(n: int, seed: int) -> list[dict[str, str]]:
    """Alpaca rows whose responses are 5..100 words (uniform), half of them with an input field."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        instruction = rng.choice(TEMPLATES).format(a=rng.choice(WORDS), b=rng.choice(WORDS))
        extra = " ".join(rng.choices(WORDS, k=rng.randint(3, 15))) + "." if rng.random() < 0.5 else ""
        output = " ".join(rng.choices(WORDS, k=rng.randint(5, 100))).capitalize() + "."
        rows.append({"instruction": instruction, "input": extra, "output": output})
    return rows


def as_chat(row: dict[str, str]) -> dict[str, list]:
    """The same row as TRL's conversational prompt/completion (alignkit's Alpaca rule for the user turn)."""
    user = f"{row['instruction']}\n\n{row['input']}" if row["input"].strip() else row["instruction"]
    return {"prompt": [{"role": "user", "content": user}],
            "completion": [{"role": "assistant", "content": row["output"]}]}


def run_alignkit(model_dir: Path, jsonl: Path, work: Path, args, packing: str) -> dict:
    from alignkit.config import SFTConfig, load_config
    from alignkit.stages.sft import run_sft
    from alignkit.training.metrics import read_metrics

    run_dir = work / f"alignkit-{packing}"
    cfg = load_config(SFTConfig, None, [
        f"model.path={model_dir}", f"data.train_path={jsonl}", f"output_dir={run_dir}", "data.eval_fraction=0",
        f"data.max_length={args.max_length}", f"data.packing={packing}", f"train.batch_size={args.batch_size}",
        f"train.max_steps={args.steps}", "optim.lr=1e-3", "log.progress=false", "log.every=1"])
    t0 = time.perf_counter()
    run_sft(cfg)
    total_s = time.perf_counter() - t0
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "tokens_per_s" in r]
    assert [r["step"] for r in rows] == list(range(1, args.steps + 1)), "expected one metrics row per step"
    packed = json.loads((run_dir / "data_report.json").read_text())["packing"]["packed"]
    # Each row counts the useful tokens and samples of its step; step 1 is the uncounted warm-up.
    return {"system": f"alignkit packing={packing}" + (" (packed)" if packed else ""),
            "samples": sum(r["samples"] for r in rows[1:]), "tokens": sum(r["tokens"] for r in rows[1:]),
            "seconds": rows[-1]["time"] - rows[0]["time"],  # end of step 1 -> end of the last step
            "total_s": total_s,
            "mean_loss": sum(r["loss"] for r in rows) / len(rows)}  # all steps, as TRL's training_loss


def run_trl(model_dir: Path, rows: list[dict], work: Path, args, packing: bool) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    class Clock(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []

        def on_step_end(self, args_, state, control, **kw):
            self.ends.append(time.perf_counter())

    class Counting:
        """Wraps TRL's collator; records each batch's real tokens and samples in dataloader order."""

        def __init__(self, inner):
            self.inner, self.tokens, self.samples = inner, [], []

        def __call__(self, examples):
            self.tokens.append(sum(len(e["input_ids"]) for e in examples))
            self.samples.append(sum(len(e["seq_lengths"]) if "seq_lengths" in e else 1 for e in examples))
            return self.inner(examples)

    config = SFTConfig(
        output_dir=str(work / f"trl-{packing}"), per_device_train_batch_size=args.batch_size,
        max_length=args.max_length, max_steps=args.steps, learning_rate=1e-3, packing=packing,
        bf16=False, gradient_checkpointing=False, use_cpu=True, report_to="none", save_strategy="no",
        eval_strategy="no", logging_steps=10**6, disable_tqdm=True, dataloader_num_workers=0, seed=0)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    clock = Clock()
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list([as_chat(r) for r in rows]),
                         processing_class=AutoTokenizer.from_pretrained(str(model_dir)), callbacks=[clock])
    counter = trainer.data_collator = Counting(trainer.data_collator)
    t0 = time.perf_counter()
    out = trainer.train()
    total_s = time.perf_counter() - t0
    assert len(clock.ends) == args.steps and len(counter.tokens) >= args.steps
    # Batch k of the dataloader is optimizer step k (no accumulation); accelerate may fetch one ahead.
    mode = " (bfd, padding-free)" if trainer.padding_free else " (padded)"
    return {"system": f"TRL packing={packing}" + mode, "samples": sum(counter.samples[1:args.steps]),
            "tokens": sum(counter.tokens[1:args.steps]), "seconds": clock.ends[-1] - clock.ends[0],
            "total_s": total_s, "mean_loss": out.training_loss}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--no-trl-packing", action="store_true", help="skip the TRL packing=True row")
    p.add_argument("--quick", action="store_true", help="smoke run: 6 steps, 400 rows")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "sft.json"))
    args = p.parse_args()
    if args.quick:
        args.steps, args.rows = 6, 400
    assert args.steps >= 2, "step 1 is a warm-up; use --steps >= 2"
    torch.set_num_threads(args.threads)
    meter = ContentionMeter()

    with tempfile.TemporaryDirectory(prefix="bench_sft_") as tmp:
        work = Path(tmp)
        rows = make_rows(args.rows, seed=0)
        jsonl = work / "train.jsonl"
        jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
        corpus = [f"{r['instruction']} {r['input']} {r['output']}" for r in rows[:1000]]
        model, _ = bench_llama(work / "model", corpus)
        n_params = sum(p.numel() for p in model.parameters())
        del model

        results = [run_trl(work / "model", rows, work, args, packing=False),
                   run_alignkit(work / "model", jsonl, work, args, "auto"),
                   run_alignkit(work / "model", jsonl, work, args, "off")]
        if not args.no_trl_packing:
            try:
                results.append(run_trl(work / "model", rows, work, args, packing=True))
            except Exception as exc:  # report, do not hide, a TRL packing failure
                print(f"TRL packing=True failed: {type(exc).__name__}: {exc}")
                results.append({"system": "TRL packing=True", "error": f"{type(exc).__name__}: {exc}"})

    others = meter.others()  # CPU cores kept busy by other processes
    for r in results:
        if "error" not in r:
            r["tokens_per_s"] = r["tokens"] / r["seconds"]
    base = results[0]["tokens_per_s"]
    print(f"\nSFT, {n_params / 1e6:.1f}M-param Llama, batch {args.batch_size}, max_length {args.max_length}, "
          f"{args.steps} steps (step 1 = warm-up, not counted), {args.rows} rows, {torch.get_num_threads()} threads")
    print(f"{'system':<40}{'steps':>6}{'samples':>9}{'useful tok':>11}{'seconds':>9}{'tok/s':>9}"
          f"{'vs TRL':>8}{'loss':>7}")
    for r in results:
        if "error" in r:
            print(f"{r['system']:<40}  failed: {r['error'][:80]}")
            continue
        r["ratio_vs_trl"] = r["tokens_per_s"] / base
        print(f"{r['system']:<40}{args.steps - 1:>6}{r['samples']:>9}{r['tokens']:>11}{r['seconds']:>9.2f}"
              f"{r['tokens_per_s']:>9.0f}{r['ratio_vs_trl']:>7.2f}x{r['mean_loss']:>7.3f}")
    ContentionMeter.warn(others)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"settings": {**vars(args), "params": n_params, "counted_steps": args.steps - 1,
                                            "other_processes_cores": others},
                               "results": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
