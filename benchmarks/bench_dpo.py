"""DPO speed, side by side: alignkit `run_dpo` vs TRL `DPOTrainer`, in one process, on CPU.

Held equal on every row: the model (one tiny Llama, ~4.5M parameters, built once and loaded from the
same directory, sdpa attention, fp32), the data (the same seeded pairwise rows as bench_rm.py; alignkit
reads them as JSONL {"prompt", "chosen", "rejected"}, TRL as the equivalent conversational
prompt/chosen/rejected, so both apply the model's chat template, whose assistant turn ends with EOS;
the script checks that the two give every pair the same ids and score the same response tokens), the
pairs per step, max_length, optimizer steps, the loss (sigmoid DPO, beta 0.1, no NLL term: alignkit
nll_coef=0, TRL loss_type=["sigmoid"], which is TRL 1.16's RPO-free default; it has no rpo_alpha), the
reference (the starting weights), dropout off (alignkit always, TRL's default), learning rate 1e-4 and
schedule (linear decay, no warmup: TRL's default, set on alignkit), AdamW without weight decay (TRL's
default fused kernel, alignkit's torch.optim.AdamW: the same update), gradient clipping at 1.0,
precomputed reference log-probs taken a training batch (16 pairs) at a time, and torch's threads.

Tokenisation: TRL 1.16 stores prompt_ids (the prompt rendered with its generation prompt, cut to the
prefix it shares with both rendered conversations) and chosen_ids / rejected_ids (the rest of each
conversation); it adds no EOS to conversational data, leaving it to the template. alignkit
(`conversation_with_start`) renders the whole conversation, appends EOS only when the template has not,
and starts the scored response where the conversation leaves the generation-prompt rendering. With
this model's template (role tokens are single special tokens, the assistant turn ends with EOS) the two
agree: same_ids_as_alignkit (TRL's prompt_ids + chosen_ids == alignkit's ids, same for rejected) and
same_scored_tokens_as_alignkit (len(prompt_ids) == alignkit's response start) are checked on every
pair. The one rule that differs, truncation (TRL's collator cuts a sequence's END, the response and its
EOS; alignkit cuts the prompt's START), never applies here: the longest sequence is ~150 tokens, and
sequences_over_max_length reports the count.

The reference is where the systems differ, so it is inside the clock. alignkit computes the reference
log-probs of every training pair once, before training (a no-grad forward pass over the dataset), then
trains the policy alone. TRL by default keeps a second copy of the model and runs a reference forward
on every step's batch; with precompute_ref_log_probs=True it does a pass like alignkit's first (in
DPOTrainer.__init__, not in train(), in 1.16). So every run trains exactly ONE epoch: rows = steps x
pairs per step, each pair used once, and no precomputed log-prob is wasted on a pair that never trains.
Four rows: TRL default (reference model per step), TRL precompute_ref_log_probs=True, alignkit default
(data.packing=auto, on for this model: a batch's 2 x 16 sequences best-fit packed into rows of
max_length with position ids restarting per sequence) and alignkit data.packing=off (right-padded like
TRL). TRL pads every batch to its longest sequence; its padding_free mode is disabled in 1.16.

Timing, the headline (pairs/s = rows / seconds): all the per-pair work, the reference log-probs plus
every optimizer step, step 1 included. alignkit: from the start of the reference pass (a wrapper around
`alignkit.stages.dpo.reference_logprobs`, which run_dpo looks up at call time) to the end of the last
step (the `time` of metrics.jsonl rows, logged every step). TRL: the duration of its precompute (an
override of `_precompute_ref_logps` that times the call: the dataloader, the forwards and the cached
dataset column it writes) plus train() from its start to the last on_step_end (a callback). Each window
also holds its own few milliseconds of optimizer/dataloader setup and each side's own per-step metrics
(TRL's fused LM head also yields entropy, mean logits and token accuracy; alignkit writes its metrics
row every step, as log.every=1 asks). Tokenising, model loading (TRL's reference copy included),
alignkit's packing check and saving are outside (`total_s` includes them); a throwaway forward and
backward runs before the first row, so no row's step 1 pays the process's kernel start-up.
Also reported: the steady step rate, from the end of step 1 to the end of the last step, so without
the warm-up step and without a precompute pass (for TRL default it still holds the per-step reference
forward: that is how TRL default trains). The padded and real tokens of the training batches (and of
the reference pass) are counted by wrappers around the collators (alignkit: `collate_responses`;
TRL: its DataCollatorForPreference). The two samplers draw different pairs per step, but over one
epoch each side sees every pair exactly once.

first_loss must be ln 2 = 0.6931 on every row (policy == reference at step 1: the check that each side
reads the right reference log-probs); the last step's loss and accuracy (implicit reward of chosen >
rejected, one batch: noisy) show that both train (the responses carry a learnable signal: chosen and
rejected draw from different halves of the vocabulary). Timings on a shared 2-core machine are noisy:
with another process busy, prefer --threads 1.

    python benchmarks/bench_dpo.py                 # 40 steps x 16 pairs = 640 rows, one epoch, max_length 256
    python benchmarks/bench_dpo.py --quick         # a smoke run: 6 steps, 96 rows
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import torch

from common import as_chat, bench_llama, make_rows  # benchmarks/common.py: the same pairwise rows as bench_rm
from contention import ContentionMeter  # benchmarks/contention.py, beside this script

LR = 1e-4
BETA = 0.1


class Shapes:
    """Wraps a collator; records each batch's real tokens and padded tokens (rows x width) in order."""

    def __init__(self, inner):
        self.inner, self.real, self.padded, self.packed = inner, [], [], False

    def __call__(self, *a, **kw):
        out = self.inner(*a, **kw)
        if "attention_mask" in out:  # padded batches (TRL, alignkit packing=off)
            self.real.append(int(out["attention_mask"].sum()))
        else:  # alignkit's packed rows: the sequences' own lengths (collate_responses(seqs, ...))
            self.real.append(sum(len(s) for s in a[0]))
            self.packed = True
        self.padded.append(out["input_ids"].numel())  # padded rows, or packed rows with their tail padding
        return out


def warm_up(model_dir: Path) -> None:
    """A throwaway forward and backward (padded, then packed-style position ids), so whichever row runs
    first does not pay the process's one-time kernel start-up in its step 1."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, attn_implementation="sdpa")
    ids = torch.randint(0, model.config.vocab_size, (8, 64), generator=torch.Generator().manual_seed(0))
    model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits.sum().backward()
    model(input_ids=ids, position_ids=torch.arange(64).repeat(8, 1), use_cache=False).logits.sum().backward()


def run_alignkit(model_dir: Path, jsonl: Path, work: Path, args, packing: str = "auto") -> dict:
    import alignkit.stages.dpo as dpo
    import alignkit.training.sequences as sequences
    from alignkit.config import DPOConfig, load_config
    from alignkit.training.metrics import read_metrics

    run_dir = work / f"alignkit-{packing}"
    cfg = load_config(DPOConfig, None, [
        f"model.path={model_dir}", "model.attn_implementation=sdpa", f"data.train_path={jsonl}",
        f"output_dir={run_dir}", "data.eval_fraction=0", f"data.max_length={args.max_length}",
        f"data.packing={packing}", "loss=sigmoid", f"beta={BETA}", "nll_coef=0", f"train.batch_size={args.batch_size}",
        f"train.eval_batch_size={args.batch_size}", f"train.max_steps={args.steps}", "train.precision=fp32",
        f"optim.lr={LR}", "optim.schedule=linear", "optim.warmup_ratio=0", "optim.weight_decay=0",
        "optim.max_grad_norm=1.0", "log.progress=false", "log.every=1", "seed=0"])
    calls: list[tuple[float, float, int]] = []  # (wall-clock start, seconds, pairs) of each reference pass
    shapes = Shapes(sequences.collate_responses)
    ref_batches = [0]
    inner_ref = dpo.reference_logprobs

    def timed_reference(model, pairs, *a, **kw):
        t0, p0 = time.time(), time.perf_counter()
        out = inner_ref(model, pairs, *a, **kw)
        calls.append((t0, time.perf_counter() - p0, len(pairs)))
        ref_batches[0] = len(shapes.real)  # every batch so far belongs to a reference pass
        return out

    inner_collate = sequences.collate_responses
    dpo.reference_logprobs, sequences.collate_responses = timed_reference, shapes  # looked up at call time
    try:
        t0 = time.perf_counter()
        dpo.run_dpo(cfg)
        total_s = time.perf_counter() - t0
    finally:
        dpo.reference_logprobs, sequences.collate_responses = inner_ref, inner_collate
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "pairs_per_s" in r]
    assert [r["step"] for r in rows] == list(range(1, args.steps + 1)), "expected one metrics row per step"
    assert calls and calls[0][2] == args.rows, f"expected a reference pass over all {args.rows} rows, got {calls}"
    n_ref = ref_batches[0]
    assert len(shapes.real) - n_ref == args.steps, "expected one micro-batch per step"
    resolved = "on" if shapes.packed else "off"
    return {"system": f"alignkit run_dpo packing={packing}" + (f" ({resolved})" if packing == "auto" else ""),
            "packed": shapes.packed, "pairs": sum(r["pairs"] for r in rows),
            "ref_s": sum(c[1] for c in calls),
            "seconds": rows[-1]["time"] - calls[0][0],  # start of the reference pass -> end of the last step
            "steady_pairs": sum(r["pairs"] for r in rows[1:]),
            "steady_seconds": rows[-1]["time"] - rows[0]["time"],  # end of step 1 -> end of the last step
            "real_tokens": sum(shapes.real[n_ref:]), "padded_tokens": sum(shapes.padded[n_ref:]),
            "ref_real_tokens": sum(shapes.real[:n_ref]), "ref_padded_tokens": sum(shapes.padded[:n_ref]),
            "total_s": total_s, "first_loss": rows[0]["loss"], "final_loss": rows[-1]["loss"],
            "final_accuracy": rows[-1]["accuracy"]}


def compare_ids(tokenizer, ds, rows: list[dict], max_length: int) -> dict:
    """Does TRL's processed dataset hold alignkit's ids for every pair, and score the same tokens?

    TRL stores prompt_ids (the prompt with its generation prompt, cut to the prefix both rendered
    conversations share) and chosen_ids / rejected_ids (the rest of each conversation); its collator
    concatenates them and truncates the END to max_length, where alignkit drops the prompt's start."""
    from alignkit.data.reward import conversation_with_start

    same_ids = same_start = len(ds) == len(rows)
    over = 0
    for p, c, j, r in zip(ds["prompt_ids"], ds["chosen_ids"], ds["rejected_ids"], rows):
        for completion, side in ((c, "chosen"), (j, "rejected")):
            found = conversation_with_start(tokenizer, ({"role": "user", "content": r["prompt"]},), r[side],
                                            max_length)
            over += len(p) + len(completion) > max_length
            if found is None:
                same_ids = same_start = False
                continue
            ids, start, _ = found
            same_ids &= p + completion == ids
            same_start &= len(p) == start
    return {"same_ids_as_alignkit": bool(same_ids), "same_scored_tokens_as_alignkit": bool(same_start),
            "sequences_over_max_length": over}


def run_trl(model_dir: Path, rows: list[dict], work: Path, args, precompute: bool) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    class Clock(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []

        def on_step_end(self, args_, state, control, **kw):
            self.ends.append(time.perf_counter())

    class TimedDPOTrainer(DPOTrainer):
        """DPOTrainer whose reference precompute (run inside __init__) is timed and its batches counted."""

        ref_s = 0.0
        ref_shapes: Shapes | None = None

        def _precompute_ref_logps(self, dataset, name, batch_size):
            inner = self.data_collator
            self.data_collator = shapes = Shapes(inner)
            t0 = time.perf_counter()
            try:
                return super()._precompute_ref_logps(dataset, name, batch_size)
            finally:
                self.ref_s += time.perf_counter() - t0
                self.ref_shapes, self.data_collator = shapes, inner

    config = DPOConfig(
        output_dir=str(work / f"trl-{'pre' if precompute else 'default'}"), per_device_train_batch_size=args.batch_size,
        max_length=args.max_length, max_steps=args.steps, learning_rate=LR, lr_scheduler_type="linear",
        warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, beta=BETA, loss_type=["sigmoid"],
        precompute_ref_log_probs=precompute, precompute_ref_batch_size=args.batch_size, disable_dropout=True,
        bf16=False, gradient_checkpointing=False, use_cpu=True, report_to="none", save_strategy="no",
        eval_strategy="no", logging_steps=10**6, disable_tqdm=True, dataloader_num_workers=0, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, attn_implementation="sdpa")
    clock = Clock()
    t_init = time.perf_counter()
    trainer = TimedDPOTrainer(model=model, args=config, train_dataset=Dataset.from_list([as_chat(r) for r in rows]),
                              processing_class=tokenizer, callbacks=[clock])
    init_s = time.perf_counter() - t_init
    ids = compare_ids(tokenizer, trainer.train_dataset, rows, args.max_length)
    shapes = trainer.data_collator = Shapes(trainer.data_collator)
    losses: list[float] = []
    last: dict[str, float] = {}
    compute_loss = trainer.compute_loss

    def recording_loss(*a, **kw):  # the first and last steps' loss and accuracy (TRL logs none with logging off)
        loss = compute_loss(*a, **kw)
        losses.append(float(loss.detach()))
        last.update(accuracy=trainer._metrics["train"]["rewards/accuracies"][-1])
        return loss

    trainer.compute_loss = recording_loss
    t0 = time.perf_counter()
    trainer.train()
    total_s = time.perf_counter() - t0 + init_s
    assert len(clock.ends) == args.steps and len(shapes.real) >= args.steps and len(losses) == args.steps
    if precompute:
        assert trainer.ref_shapes is not None and trainer.ref_s > 0, "TRL's precompute did not run"
    ref = trainer.ref_shapes
    # Batch k of the dataloader is optimizer step k (no accumulation); accelerate may fetch one ahead.
    return {"system": f"TRL DPOTrainer {'precompute_ref_log_probs' if precompute else 'default (ref model/step)'}",
            "pairs": args.steps * args.batch_size, "ref_s": trainer.ref_s,
            "seconds": trainer.ref_s + clock.ends[-1] - t0,  # precompute + start of train() -> end of the last step
            "steady_pairs": (args.steps - 1) * args.batch_size, "steady_seconds": clock.ends[-1] - clock.ends[0],
            "real_tokens": sum(shapes.real[:args.steps]), "padded_tokens": sum(shapes.padded[:args.steps]),
            "ref_real_tokens": sum(ref.real) if ref else 0, "ref_padded_tokens": sum(ref.padded) if ref else 0,
            "total_s": total_s, "first_loss": losses[0], "final_loss": losses[-1],
            "final_accuracy": last["accuracy"], **ids}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=16, help="pairs per step")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--rows", type=int, default=0, help="pairwise rows; 0: steps x batch size (one epoch)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--quick", action="store_true", help="smoke run: 6 steps, 6 x batch size (96) rows")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "dpo.json"))
    args = p.parse_args()
    if args.quick:
        args.steps, args.rows = 6, 6 * args.batch_size
    args.rows = args.rows or args.steps * args.batch_size
    assert args.steps >= 2, "step 1 is a warm-up for the steady rate; use --steps >= 2"
    epochs = args.steps * args.batch_size / args.rows
    if args.rows != args.steps * args.batch_size:
        print(f"warning: {args.rows} rows for {args.steps} x {args.batch_size} pairs is {epochs:.2f} epochs, not one: "
              "a precomputed reference then covers pairs that never train (or is reused), which the "
              "headline does not account for")
    torch.set_num_threads(args.threads)
    meter = ContentionMeter()

    with tempfile.TemporaryDirectory(prefix="bench_dpo_") as tmp:
        work = Path(tmp)
        rows = make_rows(args.rows, seed=0)
        jsonl = work / "train.jsonl"
        jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
        # The tokenizer's corpus does not depend on --rows, so --quick trains the same model as a full run.
        corpus = [f"{r['prompt']} {r['chosen']} {r['rejected']}" for r in make_rows(1000, seed=0)]
        model, _ = bench_llama(work / "model", corpus)
        n_params = sum(p.numel() for p in model.parameters())
        del model
        warm_up(work / "model")
        results = [run_trl(work / "model", rows, work, args, precompute=False),
                   run_trl(work / "model", rows, work, args, precompute=True),
                   run_alignkit(work / "model", jsonl, work, args),
                   run_alignkit(work / "model", jsonl, work, args, packing="off")]

    others = meter.others()  # CPU cores kept busy by other processes
    base, base_pre = (r["pairs"] / r["seconds"] for r in results[:2])
    steady_base, steady_pre = (r["steady_pairs"] / r["steady_seconds"] for r in results[:2])
    print(f"\nDPO, {n_params / 1e6:.1f}M-param Llama, {args.batch_size} pairs/step, max_length {args.max_length}, "
          f"{args.steps} steps over {args.rows} rows ({epochs:g} epoch), {torch.get_num_threads()} threads")
    print("pairs/s: reference log-probs + all steps; steady: steps 2.. only (no precompute, no warm-up step)")
    print(f"{'system':<47}{'pairs':>6}{'ref s':>7}{'seconds':>9}{'pairs/s':>9}{'vs TRL':>8}{'vs pre':>8}"
          f"{'steady':>8}{'(vs TRL)':>9}{'tok/s':>7}{'pad %':>7}{'loss1':>7}{'loss':>7}{'acc':>6}")
    for r in results:
        r["pairs_per_s"] = r["pairs"] / r["seconds"]
        r["steady_pairs_per_s"] = r["steady_pairs"] / r["steady_seconds"]
        r["real_tokens_per_s"] = r["real_tokens"] / r["seconds"]  # the pairs' own tokens, each counted once
        r["ratio_vs_trl"] = r["pairs_per_s"] / base
        r["ratio_vs_trl_precompute"] = r["pairs_per_s"] / base_pre
        r["steady_ratio_vs_trl"] = r["steady_pairs_per_s"] / steady_base
        r["steady_ratio_vs_trl_precompute"] = r["steady_pairs_per_s"] / steady_pre
        pad = 100 * (1 - r["real_tokens"] / r["padded_tokens"])
        print(f"{r['system']:<47}{r['pairs']:>6}{r['ref_s']:>7.2f}{r['seconds']:>9.2f}{r['pairs_per_s']:>9.1f}"
              f"{r['ratio_vs_trl']:>7.2f}x{r['ratio_vs_trl_precompute']:>7.2f}x{r['steady_pairs_per_s']:>8.1f}"
              f"{r['steady_ratio_vs_trl']:>8.2f}x{r['real_tokens_per_s']:>7.0f}{pad:>6.1f}%{r['first_loss']:>7.4f}"
              f"{r['final_loss']:>7.3f}{r['final_accuracy']:>6.2f}")
    for r in results:
        if abs(r["first_loss"] - math.log(2)) > 1e-3:
            print(f"warning: {r['system']}: step 1 loss {r['first_loss']:.4f} is not ln 2 (policy != reference?)")
    for r in results[:2]:
        if not (r["same_ids_as_alignkit"] and r["same_scored_tokens_as_alignkit"]):
            print(f"warning: {r['system']} tokenised some pairs differently from alignkit (ids "
                  f"{r['same_ids_as_alignkit']}, scored tokens {r['same_scored_tokens_as_alignkit']}, "
                  f"{r['sequences_over_max_length']} sequences over max_length: TRL cuts their end, alignkit "
                  "their prompt's start)")
    ContentionMeter.warn(others)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"settings": {**vars(args), "lr": LR, "beta": BETA, "params": n_params,
                                            "epochs": epochs, "steady_counted_steps": args.steps - 1,
                                            "other_processes_cores": others},
                               "results": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
