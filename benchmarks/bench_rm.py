"""Reward-model speed, side by side: alignkit `run_rm` vs TRL `RewardTrainer`, in one process, on CPU.

Held equal on every row: the model (one tiny Llama, ~4.5M parameters, built once and loaded from the
same directory, a fresh scalar head on top), the data (the same seeded pairwise rows; alignkit reads
them as JSONL {"prompt", "chosen", "rejected"}, TRL as the equivalent conversational
prompt/chosen/rejected, so both apply the model's chat template and end each sequence with EOS; the
script checks that the two tokenise every pair to the same ids), the pairs per step, max_length,
optimizer steps, learning rate and schedule (linear decay, no warmup: TRL's default, set on alignkit),
AdamW, gradient clipping at 1.0, fp32, and torch's thread count.

Both sides run chosen and rejected of a micro-batch in one forward pass, right-padded together to
the longest of the 2 x batch sequences, so padding costs the same kind of waste on both; the padded
and real token counts of every counted step are reported (alignkit: a counting wrapper around
`collate_pairs`; TRL: one around its collator) so a gap that comes from different batch shapes shows.
The two samplers draw different pairs, so widths differ step by step; over 29 steps they average out.
The responses carry a learnable signal (chosen and rejected draw from different halves of the
vocabulary; lengths 5..60 words either way), so accuracy rising above 0.5 shows both actually train.

Timing: the first optimizer step of every run is a warm-up and is not counted; the clock runs from
the end of step 1 to the end of the last step (alignkit: the `time` of metrics.jsonl rows, logged
every step, whose `pairs` column gives the count; TRL: a callback at on_step_end). Setup
(tokenising, model load) and saving are outside (`total_s` in the JSON includes them). The loss and
accuracy columns are those of the last step (one batch: noisy), a sanity check, not a quality score.
Timings on a shared 2-core machine are noisy: with another process busy, prefer --threads 1.

    python benchmarks/bench_rm.py                  # 30 steps, 16 pairs a step, max_length 256, 3,000 rows
    python benchmarks/bench_rm.py --quick          # a smoke run of a few steps
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from common import as_chat, bench_llama, make_rows  # benchmarks/common.py
from contention import ContentionMeter  # benchmarks/contention.py, beside this script

LR = 1e-4


class Shapes:
    """Wraps a collator; records each batch's real tokens and padded tokens (rows x width) in order."""

    def __init__(self, inner):
        self.inner, self.real, self.padded = inner, [], []

    def __call__(self, pairs, *a, **kw):
        out = self.inner(pairs, *a, **kw)
        if "attention_mask" in out:  # padded batches (TRL, alignkit packing=off)
            self.real.append(int(out["attention_mask"].sum()))
        else:  # alignkit's packed rows: the sequences' own lengths
            self.real.append(sum(len(p.chosen_ids) + len(p.rejected_ids) for p in pairs))
        self.padded.append(out["input_ids"].numel())  # padded rows, or packed rows with their tail padding
        return out


def run_alignkit(model_dir: Path, jsonl: Path, work: Path, args, packing: str = "auto") -> dict:
    import alignkit.stages.rm as rm
    from alignkit.config import RMConfig, load_config
    from alignkit.training.metrics import read_metrics

    run_dir = work / f"alignkit-{packing}"
    cfg = load_config(RMConfig, None, [f"data.packing={packing}",
        f"model.path={model_dir}", f"data.train_path={jsonl}", f"output_dir={run_dir}", "data.eval_fraction=0",
        f"data.max_length={args.max_length}", f"train.batch_size={args.batch_size}", f"train.max_steps={args.steps}",
        f"optim.lr={LR}", "optim.schedule=linear", "optim.warmup_ratio=0", "log.progress=false", "log.every=1"])
    inner, rm.collate_pairs = rm.collate_pairs, Shapes(rm.collate_pairs)  # run_rm looks it up at call time
    shapes = rm.collate_pairs
    try:
        t0 = time.perf_counter()
        rm.run_rm(cfg)
        total_s = time.perf_counter() - t0
    finally:
        rm.collate_pairs = inner
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "pairs_per_s" in r]
    assert [r["step"] for r in rows] == list(range(1, args.steps + 1)), "expected one metrics row per step"
    assert len(shapes.real) == args.steps, "expected one micro-batch per step"
    return {"system": f"alignkit run_rm packing={packing}", "pairs": sum(r["pairs"] for r in rows[1:]),
            "seconds": rows[-1]["time"] - rows[0]["time"],  # end of step 1 -> end of the last step
            "real_tokens": sum(shapes.real[1:]), "padded_tokens": sum(shapes.padded[1:]), "total_s": total_s,
            "final_loss": rows[-1]["loss"], "final_accuracy": rows[-1]["accuracy"]}


def run_trl(model_dir: Path, rows: list[dict], work: Path, args) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl import RewardConfig, RewardTrainer

    from alignkit.data.reward import conversation_ids

    class Clock(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []

        def on_step_end(self, args_, state, control, **kw):
            self.ends.append(time.perf_counter())

    config = RewardConfig(
        output_dir=str(work / "trl"), per_device_train_batch_size=args.batch_size, max_length=args.max_length,
        max_steps=args.steps, learning_rate=LR, bf16=False, gradient_checkpointing=False, use_cpu=True,
        report_to="none", save_strategy="no", eval_strategy="no", logging_steps=10**6, disable_tqdm=True,
        dataloader_num_workers=0, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    clock = Clock()
    trainer = RewardTrainer(model=model, args=config, train_dataset=Dataset.from_list([as_chat(r) for r in rows]),
                            processing_class=tokenizer, callbacks=[clock])
    # Fairness check: TRL's ids for every pair must be alignkit's (same template, EOS last, no truncation).
    ds, ours = trainer.train_dataset, lambda r, side: conversation_ids(
        tokenizer, ({"role": "user", "content": r["prompt"]},), r[side], args.max_length)
    same = len(ds) == len(rows) and all(c == ours(r, "chosen") and j == ours(r, "rejected")
                                        for c, j, r in zip(ds["chosen_ids"], ds["rejected_ids"], rows))
    shapes = trainer.data_collator = Shapes(trainer.data_collator)
    last: dict[str, float] = {}
    compute_loss = trainer.compute_loss

    def recording_loss(*a, **kw):  # the last step's loss and accuracy (TRL logs neither with logging off)
        loss = compute_loss(*a, **kw)
        last.update(loss=float(loss.detach()), accuracy=trainer._metrics["train"]["accuracy"][-1])
        return loss

    trainer.compute_loss = recording_loss
    t0 = time.perf_counter()
    trainer.train()
    total_s = time.perf_counter() - t0
    assert len(clock.ends) == args.steps and len(shapes.real) >= args.steps
    # Batch k of the dataloader is optimizer step k (no accumulation); accelerate may fetch one ahead.
    return {"system": "TRL RewardTrainer", "pairs": (args.steps - 1) * args.batch_size,
            "seconds": clock.ends[-1] - clock.ends[0], "real_tokens": sum(shapes.real[1:args.steps]),
            "padded_tokens": sum(shapes.padded[1:args.steps]), "total_s": total_s,
            "final_loss": last["loss"], "final_accuracy": last["accuracy"], "same_ids_as_alignkit": same}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=16, help="pairs per step")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--rows", type=int, default=3000)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--quick", action="store_true", help="smoke run: 6 steps, 400 rows")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "rm.json"))
    args = p.parse_args()
    if args.quick:
        args.steps, args.rows = 6, 400
    assert args.steps >= 2, "step 1 is a warm-up; use --steps >= 2"
    torch.set_num_threads(args.threads)
    meter = ContentionMeter()

    with tempfile.TemporaryDirectory(prefix="bench_rm_") as tmp:
        work = Path(tmp)
        rows = make_rows(args.rows, seed=0)
        jsonl = work / "train.jsonl"
        jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
        corpus = [f"{r['prompt']} {r['chosen']} {r['rejected']}" for r in rows[:1000]]
        model, _ = bench_llama(work / "model", corpus)
        n_params = sum(p.numel() for p in model.parameters())
        del model
        results = [run_trl(work / "model", rows, work, args), run_alignkit(work / "model", jsonl, work, args),
                   run_alignkit(work / "model", jsonl, work, args, packing="off")]

    others = meter.others()  # CPU cores kept busy by other processes
    base = results[0]["pairs"] / results[0]["seconds"]
    print(f"\nReward model, {n_params / 1e6:.1f}M-param Llama, {args.batch_size} pairs/step, max_length "
          f"{args.max_length}, {args.steps} steps (step 1 = warm-up, not counted), {args.rows} rows, "
          f"{torch.get_num_threads()} threads")
    print(f"{'system':<34}{'steps':>6}{'pairs':>7}{'seconds':>9}{'pairs/s':>9}{'vs TRL':>8}{'tok/s':>8}"
          f"{'pad %':>7}{'loss':>7}{'acc':>6}")
    for r in results:
        r["pairs_per_s"] = r["pairs"] / r["seconds"]
        r["real_tokens_per_s"] = r["real_tokens"] / r["seconds"]
        r["ratio_vs_trl"] = r["pairs_per_s"] / base
        pad = 100 * (1 - r["real_tokens"] / r["padded_tokens"])
        print(f"{r['system']:<34}{args.steps - 1:>6}{r['pairs']:>7}{r['seconds']:>9.2f}{r['pairs_per_s']:>9.1f}"
              f"{r['ratio_vs_trl']:>7.2f}x{r['real_tokens_per_s']:>8.0f}{pad:>6.1f}%{r['final_loss']:>7.3f}"
              f"{r['final_accuracy']:>6.2f}")
    if not results[0]["same_ids_as_alignkit"]:
        print("warning: TRL and alignkit tokenised some pairs differently (template, EOS or length filter)")
    ContentionMeter.warn(others)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"settings": {**vars(args), "lr": LR, "params": n_params,
                                            "counted_steps": args.steps - 1, "other_processes_cores": others},
                               "results": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
