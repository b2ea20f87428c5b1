"""GRPO and RLOO speed, side by side: alignkit `run_grpo` vs TRL 1.16's GRPOTrainer and RLOOTrainer, on CPU.

Each row trains the same tiny policy on the same prompts with both systems, one after the other, each
in a child process of this script (`--side trl|alignkit --row NAME`), and the parent prints both
numbers and their ratio. Both children get the same torch thread count. The rows:

    grpo      group-normalised advantages, KL off (beta 0: no reference model on either side)
              alignkit group.advantage=grpo, group.aggregation=token_mean
              TRL GRPOTrainer, scale_rewards="group", loss_type="dapo" (its default)
    rloo      leave-one-out advantages, KL off
              alignkit group.advantage=rloo, group.aggregation=constant
              TRL RLOOTrainer, normalize_advantages=False
    grpo_kl   as grpo, with beta 0.04: a frozen reference and the k3 KL per token in the loss
              (alignkit kl.coef=0.04, kl.mode=loss; TRL beta=0.04)

Held equal: the policy (a tiny Llama, hidden 256, 4 layers, ~4.5M parameters, random weights, built
once and loaded by both sides from the same directory, fp32, dropout off: alignkit always, TRL
disable_dropout=True); the reference where there is one (the policy's starting weights: alignkit a
frozen copy of the loaded policy, TRL a second load of the same directory); the prompts (the same
seeded short chat prompts; alignkit reads them as JSONL {"prompt"}, TRL as a datasets.Dataset with a
conversational "prompt" column, so both render them with the model's chat template and generation
prompt: the TRL child checks that its ids equal alignkit's `encode_prompts`), left-padded per batch;
the group size (alignkit group.n = TRL num_generations); prompts per step (alignkit train.batch_size;
TRL per_device_train_batch_size = prompts x group size completions, gradient_accumulation_steps=1,
steps_per_generation=1); ONE generation per optimizer step, used once (alignkit group.epochs=1,
group.minibatches=1; TRL num_iterations=1), so the whole generation is one micro-batch of one
optimizer step on both sides; the response length (alignkit rollout.max_new_tokens = TRL
max_completion_length; sampling stops once every row has EOS), temperature 1.0, no top-p (1.0), no
top-k (0), no repetition penalty; the clip range 0.2 both ways (alignkit group.clip_low/clip_high =
TRL epsilon/epsilon_high); the reward: one Python FUNCTION, no reward model (the share of the
response's non-space characters that are the letter "e": cheap, and it varies within every group, so
the advantages and gradients are not zero; alignkit gets `bench_grpo:reward_fn` in its rewards list,
TRL the callable `trl_reward`, both reading the decoded text with special tokens skipped); no penalty for a
response that never ends (alignkit rollout.no_eos_penalty=0, group.overlong_buffer=0; TRL
mask_truncated_completions=False); no dynamic sampling; learning rate 1e-5, constant, no warmup;
AdamW (0.9, 0.999, eps 1e-8, no weight decay); gradient clipping at 1.0; no evaluation, no
checkpoints, no logging of completions during the run. TRL is set as FACTS.md says for a fair CPU
run: bf16=False, gradient_checkpointing=False, use_cpu=True, report_to="none"; also
log_completions=False and its per-step console printer removed (alignkit runs with log.progress=false).

Not the same, on purpose or by design (named, as each moves the time a little):
- RLOO: TRL's RLOOTrainer always runs one more no-grad forward of the policy per generation for the
  old log-probs (its ratio is per sequence, from their sum), even with one update per generation;
  alignkit, with one update per generation, takes the ratio's old side from the training forward
  itself (detached, ratio exactly 1) and skips that pass. That forward is TRL's cost, in its prep.
- RLOO's loss scale: TRL sums each response's token log-probs (its sequence-level ratio) and averages
  over responses; alignkit's constant aggregation sums over tokens and divides by responses x
  max_new_tokens. Both weigh every response token alike; the gradients differ by the factor
  max_new_tokens, which the clip at 1.0 and Adam mostly absorb. It changes no step's work.
- TRL computes log-probs with its fused LM head (the head applied in tiles to the response positions
  only, also yielding the entropy); alignkit keeps the logits of the response positions
  (logits_to_keep), then one log-softmax (its entropy figure from the same tensor).
- Sampling: TRL calls HF `generate`; alignkit prefills each prompt once for its group and samples
  with its own loop (rl/sampling.py), which draws exactly the tokens `generate` draws under the same
  seed (tests/test_sampling.py) with less per-token overhead and a KV cache grown in place.
- TRL's no-grad and training forwards take no position ids (positions count padding too); alignkit
  passes ids that count real tokens only, as generate's do. Same work.
- TRL pads a generation's completions to its longest and its prompts to theirs; alignkit trims the
  columns that are padding in every row (`select`): the same here, as a batch runs to the full
  length unless every response ends.
- TRL's default optimizer is torch's fused AdamW kernel; alignkit uses torch.optim.AdamW (the same
  update).
- The two sides draw different prompts and tokens (their own RNG streams and samplers), so response
  lengths and rewards differ a little from step to step (the `len` column: mean response tokens).
- The models are untrained, so few responses end with EOS and sampling runs to the full length.

Timing: step 1 of each run is a warm-up and is not counted; the clock runs from the end of step 1 to
the end of the last step (alignkit: the `time` of metrics.jsonl rows, one per step, log.every=1;
TRL: a callback at on_step_end, called once per optimizer step after the clip, the optimizer and
schedule steps). completions/s = (steps - 1) x prompts x group size / those seconds: sampling,
scoring, the reference and every update are inside. Model loading, tokenising and saving are outside
(`total_s` in the JSON, the child's whole train call, includes them). Where the time goes (seconds
summed over the counted steps): gen = sampling, decoding and the reward function (alignkit: its
metrics rows' gen_s; TRL: its `_generate` and `_calculate_rewards`, wrapped with timers, also kept
apart as score_s), prep = the no-grad forwards before the update: reference log-probs, and TRL RLOO's
old log-probs (alignkit: prep_s, which also holds its advantages; TRL: the no-grad calls of
`_get_per_token_logps_and_entropies`), update = from the first training forward of the step to the
end of its optimizer step (both sides: a wrapper marks the first grad-enabled forward, alignkit's
`policy_loss` and TRL's `_get_per_token_logps_and_entropies`, and the end is alignkit's
`optimizer_step` returning, TRL's on_step_end), other = the rest (TRL: padding and advantages in
`_generate_and_score_completions`, metrics and logging; alignkit: slicing the generation, metrics).
alignkit's own update figure, response tokens / train_tokens_per_s from its metrics rows, is kept
in the JSON as update_s_from_metrics. Timings on a shared 2-core machine are noisy: the contention
reading is printed and saved; with another process busy, prefer --threads 1.

    python benchmarks/bench_grpo.py                 # 10 steps x 8 prompts x 8 completions, 32 new tokens, 3 rows
    python benchmarks/bench_grpo.py --quick         # a smoke run: 3 steps x 4 prompts x 4 completions, 16 new tokens
    python benchmarks/bench_grpo.py --only trl      # one system (e.g. while the other does not run)
    python benchmarks/bench_grpo.py --rows grpo     # one row
    python benchmarks/bench_grpo.py --device cuda   # both sides on the GPU (fp32, the same settings otherwise)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from rl_common import ChildMeter, Split, make_prompts, prompt_ids_alignkit, versions  # benchmarks/rl_common.py
from common import WORDS, bench_llama  # benchmarks/common.py
from contention import ContentionMeter  # benchmarks/contention.py, beside this script

TRL_VERSION = "1.16.0"
LR, CLIP, MAX_GRAD_NORM, KL_BETA = 1e-5, 0.2, 1.0, 0.04
TARGET = "e"  # the reward: the share of a response's characters (spaces aside) that are this letter
ROWS = {  # row -> (alignkit advantage, alignkit aggregation, TRL trainer, beta)
    "grpo": ("grpo", "token_mean", "GRPOTrainer", 0.0),
    "rloo": ("rloo", "constant", "RLOOTrainer", 0.0),
    "grpo_kl": ("grpo", "token_mean", "GRPOTrainer", KL_BETA),
}


# --------------------------------------------------------------------------------------------
# The reward, one function for both sides (alignkit imports it as bench_grpo:reward_fn)
# --------------------------------------------------------------------------------------------

def target_share(text: str) -> float:
    letters = [c for c in text.lower() if not c.isspace()]
    return sum(c == TARGET for c in letters) / len(letters) if letters else 0.0


def reward_fn(prompts: list, responses: list[str], rows: list[dict]) -> list[float]:
    """alignkit's signature: fn(prompts, responses, rows) -> one float per response."""
    return [target_share(r) for r in responses]


def trl_reward(prompts: list, completions: list, **kwargs) -> list[float]:
    """TRL's signature: conversational completions are [{"role": "assistant", "content": text}]."""
    return [target_share(c[-1]["content"] if isinstance(c, list) else c) for c in completions]


# --------------------------------------------------------------------------------------------
# The parent: builds the model and prompts once, runs each side of each row in a child, compares
# --------------------------------------------------------------------------------------------

def build_policy(work: Path, prompts: list[str], seed: int) -> dict[str, int]:
    rng = random.Random(seed + 1)
    corpus = prompts[:1000] + [" ".join(rng.choices(WORDS, k=40)) for _ in range(500)]
    policy, tokenizer = bench_llama(work / "policy", corpus, seed)
    return {"policy_params": sum(p.numel() for p in policy.parameters()), "vocab": len(tokenizer)}


def run_child(system: str, row: str, work: Path, verbose: bool, device: str) -> dict:
    name = f"{system}-{row}"
    log = work / f"{name}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--side", system, "--row", row, "--work", str(work)]
    env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if device == "cpu" else {})}
    meter = ChildMeter()
    t0 = time.perf_counter()
    with log.open("w") as fh:
        rc = subprocess.run(cmd, stdout=None if verbose else fh, stderr=None if verbose else subprocess.STDOUT,
                            cwd=str(Path(__file__).parent), env=env).returncode
    wall = time.perf_counter() - t0
    result_path = work / f"result-{name}.json"
    if result_path.is_file():
        result = json.loads(result_path.read_text())
    else:
        tail = "" if verbose else "\n".join(log.read_text().splitlines()[-25:])
        result = {"side": system, "row": row, "system": system, "error": f"child exited with status {rc} and no result",
                  "log_tail": tail}
        print(f"--- {name} failed (status {rc}); last lines of its output:\n{tail}\n---")
    result.update(process_s=wall, other_processes_cores=meter.others())
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=10, help="optimizer steps (= generations) per run")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per step")
    p.add_argument("--group", type=int, default=8, help="completions per prompt (group.n = num_generations)")
    p.add_argument("--prompts", type=int, default=256)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where both sides run (cpu hides any GPU from the children)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=("trl", "alignkit"), help="run one system")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 steps x 4 prompts x 4 completions, 16 new tokens")
    p.add_argument("--verbose", action="store_true", help="show the children's output as it comes")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "grpo.json"))
    p.add_argument("--side", choices=("trl", "alignkit"), help=argparse.SUPPRESS)  # child mode
    p.add_argument("--row", choices=tuple(ROWS), help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side:
        settings = json.loads((args.work / "settings.json").read_text())
        torch.set_num_threads(settings["threads"])
        (side_trl if args.side == "trl" else side_alignkit)(settings, args.work, args.row)
        return

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_grpo: --device cuda, but this torch sees no CUDA device")
    if args.quick:
        args.steps, args.batch_size, args.group, args.prompts, args.max_new_tokens = 3, 4, 4, 64, 16
    assert args.steps >= 2, "step 1 is a warm-up; use --steps >= 2"
    assert args.group >= 2, "a group needs at least 2 completions"
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        sys.exit(f"bench_grpo: unknown row(s) {', '.join(unknown)}; expected some of {', '.join(ROWS)}")
    systems = [args.only] if args.only else ["trl", "alignkit"]
    meter = ChildMeter()
    settings = {k: v for k, v in vars(args).items() if k not in ("side", "row", "work", "out", "verbose")}
    settings.update(rows=rows, lr=LR, schedule="constant", clip=CLIP, max_grad_norm=MAX_GRAD_NORM, kl_beta=KL_BETA,
                    temperature=1.0, reward=f"share of non-space characters that are {TARGET!r}",
                    counted_steps=args.steps - 1, completions_per_step=args.batch_size * args.group)

    with tempfile.TemporaryDirectory(prefix="bench_grpo_") as tmp:
        work = Path(tmp)
        prompts = make_prompts(args.prompts, args.seed)
        (work / "prompts.jsonl").write_text("".join(json.dumps({"prompt": q}) + "\n" for q in prompts))
        settings.update(build_policy(work, prompts, args.seed))
        (work / "prompt_ids.json").write_text(json.dumps(prompt_ids_alignkit(work, prompts)))
        lengths = [len(x) for x in json.loads((work / "prompt_ids.json").read_text())]
        settings["prompt_tokens_mean"] = sum(lengths) / len(lengths)
        (work / "settings.json").write_text(json.dumps(settings))
        results = []
        for row in rows:
            for system in systems:
                print(f"running {system} on row {row} ...", flush=True)
                results.append(run_child(system, row, work, args.verbose, args.device))

    others = meter.others()
    ok = [r for r in results if "error" not in r]
    for r in ok:
        r["completions_per_s"] = r["completions"] / r["seconds"]
    ratios: dict[str, float | None] = {}
    for row in rows:
        trl = next((r for r in ok if r["row"] == row and r["side"] == "trl"), None)
        ak = next((r for r in ok if r["row"] == row and r["side"] == "alignkit"), None)
        ratios[row] = ak["completions_per_s"] / trl["completions_per_s"] if trl and ak else None
        if ratios[row] is not None:
            ak["ratio_vs_trl"] = ratios[row]

    print(f"\nGRPO/RLOO, {settings['policy_params'] / 1e6:.1f}M-param Llama policy, {args.batch_size} prompts x "
          f"{args.group} completions per step, {args.max_new_tokens} new tokens, one optimizer step per generation, "
          f"{args.steps} steps (1 = warm-up, not counted), "
          f"{args.threads} threads" + (f", on {torch.cuda.get_device_name()}" if args.device == "cuda" else ""))
    print(f"{'row':<9}{'system':<28}{'compl':>7}{'seconds':>9}{'compl/s':>9}{'vs TRL':>8}"
          f"{'gen':>7}{'prep':>7}{'update':>8}{'other':>7}{'len':>6}")
    fmt = lambda s, k: f"{s[k]:>7.1f}" if s.get(k) is not None else f"{'-':>7}"  # noqa: E731
    for r in results:
        if "error" in r:
            print(f"{r['row']:<9}{r['system']:<28}  failed: {r['error'][:100]}")
            continue
        s = r["split_s"]
        vs = f"{r['ratio_vs_trl']:>7.2f}x" if "ratio_vs_trl" in r else f"{'':>8}"
        length = f"{r['response_length']:>6.1f}" if r.get("response_length") is not None else f"{'-':>6}"
        print(f"{r['row']:<9}{r['system']:<28}{r['completions']:>7}{r['seconds']:>9.2f}{r['completions_per_s']:>9.2f}"
              f"{vs}{fmt(s, 'gen_s')}{fmt(s, 'prep_s')} {fmt(s, 'update_s')}{fmt(s, 'other_s')}{length}")
    print("(gen/prep/update/other: seconds over the counted steps; gen = sampling + reward, prep = reference "
          "(and TRL RLOO's old) log-probs, len = mean response tokens)")
    for r in ok:
        if r["side"] == "trl" and not r.get("same_prompt_ids_as_alignkit", False):
            print(f"warning: TRL ({r['row']}) and alignkit tokenised some prompts differently")
    done = {row: f"{v:.2f}x" for row, v in ratios.items() if v is not None}
    if done:
        print("alignkit / TRL completions per second: " + ", ".join(f"{row} {v}" for row, v in done.items()))
    busy = max([others] + [r.get("other_processes_cores", 0.0) for r in results])
    if args.threads + busy > (os.cpu_count() or 1) + 0.2:  # oversubscribed: the numbers may be far off
        ContentionMeter.warn(busy)
    elif busy > 0.2:
        print(f"note: other processes kept {busy:.1f} of {os.cpu_count()} cores busy; {args.threads} thread(s) "
              "still had cores of their own")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"settings": {**settings, "other_processes_cores": others, "versions": versions()},
                               "ratio_alignkit_vs_trl": ratios, "results": results}, indent=2) + "\n")
    print(f"wrote {out}")


# --------------------------------------------------------------------------------------------
# The children: one system on one row each, in a process of its own
# --------------------------------------------------------------------------------------------

def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def write_result(work: Path, side: str, row: str, result: dict) -> None:
    (work / f"result-{side}-{row}.json").write_text(json.dumps({"side": side, "row": row, **result}, indent=2))


def read_prompts(work: Path) -> list[str]:
    return [json.loads(line)["prompt"] for line in (work / "prompts.jsonl").read_text().splitlines()]


def side_trl(settings: dict, work: Path, row: str) -> None:
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback

    _, _, trainer_name, beta = ROWS[row]
    if trl.__version__ != TRL_VERSION:
        print(f"warning: expected trl {TRL_VERSION}, imported {trl.__version__} from {trl.__file__}")
    steps, n = settings["steps"], settings["group"]
    device = settings.get("device", "cpu")
    completions_per_step = settings["batch_size"] * n
    tokenizer = AutoTokenizer.from_pretrained(str(work / "policy"))
    prompts = read_prompts(work)
    chats = [[{"role": "user", "content": q}] for q in prompts]
    ids = [list(x) for x in tokenizer.apply_chat_template(chats, add_generation_prompt=True, tokenize=True,
                                                          return_dict=True)["input_ids"]]
    same = ids == json.loads((work / "prompt_ids.json").read_text())
    train = Dataset.from_dict({"prompt": chats})

    common = dict(
        output_dir=str(work / f"trl-{row}"), per_device_train_batch_size=completions_per_step,
        gradient_accumulation_steps=1, steps_per_generation=1, num_generations=n, num_iterations=1,
        max_completion_length=settings["max_new_tokens"], temperature=settings["temperature"], top_p=1.0, top_k=0,
        repetition_penalty=1.0, beta=beta, epsilon=CLIP, epsilon_high=CLIP, mask_truncated_completions=False,
        disable_dropout=True, log_completions=False, learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, max_grad_norm=MAX_GRAD_NORM,
        max_steps=steps, bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=device == "cpu", report_to="none",
        save_strategy="no", eval_strategy="no", logging_steps=1, disable_tqdm=True, dataloader_num_workers=0,
        seed=settings["seed"])
    if trainer_name == "GRPOTrainer":
        from trl import GRPOConfig as Config, GRPOTrainer as Trainer

        config = Config(**common, loss_type="dapo", scale_rewards="group", importance_sampling_level="token")
    else:
        from trl import RLOOConfig as Config, RLOOTrainer as Trainer

        config = Config(**common, normalize_advantages=False, reward_clip_range=None)

    split = Split()
    lengths: list[float] = []
    ended: list[int] = []

    class Clock(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []

        def on_step_end(self, args_, state, control, **kw):
            sync(device)  # the GPU's queue done: the step's work, not only its launch
            t = time.perf_counter()
            self.ends.append(t)
            split.marks["update_end"] = t  # after the clip, the optimizer and schedule steps, zero_grad
            split.close()

    t0 = time.perf_counter()
    clock = Clock()
    policy = AutoModelForCausalLM.from_pretrained(str(work / "policy"), dtype=torch.float32)
    trainer = Trainer(model=policy, reward_funcs=[trl_reward], args=config, train_dataset=train,
                      processing_class=tokenizer, callbacks=[clock])
    trainer.remove_callback(PrinterCallback)  # prints the metrics dict every step
    if (trainer.ref_model is not None) != (beta > 0):
        state = "loaded" if trainer.ref_model is not None else "absent"
        print(f"warning: beta {beta} but TRL's reference model is {state}")

    generate = trainer._generate

    def counted_generate(prompts_):
        out = generate(prompts_)
        completion_ids = out[1]
        lengths.append(sum(len(c) for c in completion_ids) / len(completion_ids))
        ended.append(sum(bool(c) and c[-1] == tokenizer.eos_token_id for c in completion_ids))
        return out

    no_grad = lambda: not torch.is_grad_enabled()  # noqa: E731
    trainer._generate = split.timed(counted_generate, "gen_s")
    trainer._calculate_rewards = split.timed(trainer._calculate_rewards, "score_s")
    # No grad: the reference (and RLOO's old) log-probs; with grad: the step's training forward.
    trainer._get_per_token_logps_and_entropies = split.mark_first(
        split.timed(trainer._get_per_token_logps_and_entropies, "prep_s", when=no_grad), "update_start",
        when=torch.is_grad_enabled)
    trainer.train()
    total_s = time.perf_counter() - t0
    assert len(clock.ends) == steps and len(split.steps) == steps, (len(clock.ends), len(split.steps))
    assert len(lengths) == steps, f"expected one generation per step, got {len(lengths)} in {steps} steps"
    counted = split.steps[1:]
    seconds = clock.ends[-1] - clock.ends[0]
    split_s = {k: sum(s.get(k, 0.0) for s in counted) for k in ("gen_s", "score_s", "prep_s", "update_s")}
    split_s["gen_s"] += split_s["score_s"]  # as alignkit's gen_s: sampling, decoding and the reward
    split_s["other_s"] = seconds - split_s["gen_s"] - split_s["prep_s"] - split_s["update_s"]
    last = next((h for h in reversed(trainer.state.log_history) if "reward" in h), {})
    write_result(work, "trl", row, {
        "system": f"TRL {trl.__version__} {trainer_name}", "completions": (steps - 1) * completions_per_step,
        "seconds": seconds, "split_s": split_s, "step_s": [b - a for a, b in zip(clock.ends, clock.ends[1:])],
        "response_length": sum(lengths[1:]) / len(lengths[1:]), "response_lengths": lengths,
        "eos_rate": sum(ended[1:]) / ((steps - 1) * completions_per_step), "beta": beta,
        "reference_loaded": trainer.ref_model is not None, "same_prompt_ids_as_alignkit": same, "total_s": total_s,
        "final_metrics": {k: v for k, v in last.items() if k in ("reward", "reward_std", "kl", "entropy",
                                                                 "learning_rate", "grad_norm")},
        "versions": {**versions(), "trl": trl.__version__}})


def side_alignkit(settings: dict, work: Path, row: str) -> None:
    import alignkit
    import alignkit.training.loop as loop
    from alignkit.config import GRPOConfig, load_config
    from alignkit.training.metrics import read_metrics

    advantage, aggregation, _, beta = ROWS[row]
    system = f"alignkit run_grpo ({advantage})"
    try:
        import alignkit.stages.grpo as stage
    except ImportError as exc:
        write_result(work, "alignkit", row, {"system": system,
                                             "error": f"alignkit.stages.grpo is not available: {exc}"})
        return
    steps, n, batch = settings["steps"], settings["group"], settings["batch_size"]
    device = settings.get("device", "cpu")
    out = work / f"alignkit-{row}-out"
    cfg = load_config(GRPOConfig, None, [
        f"model.path={work / 'policy'}", f"rollout.prompts_path={work / 'prompts.jsonl'}", f"output_dir={out}",
        f"seed={settings['seed']}", f"rewards={json.dumps([{'fn': 'bench_grpo:reward_fn'}])}",
        f"train.batch_size={batch}", "train.grad_accum=1", f"train.max_steps={steps}", "train.precision=fp32",
        "train.eval_every=0", f"group.n={n}", f"group.advantage={advantage}", f"group.aggregation={aggregation}",
        "group.epochs=1", "group.minibatches=1", f"group.clip_low={CLIP}", f"group.clip_high={CLIP}",
        "group.dynamic_sampling=false", "group.overlong_buffer=0",
        f"rollout.max_new_tokens={settings['max_new_tokens']}", f"rollout.temperature={settings['temperature']}",
        "rollout.top_p=1.0", "rollout.top_k=0", "rollout.no_eos_penalty=0", f"kl.coef={beta}", "kl.mode=loss",
        f"optim.lr={LR}", "optim.schedule=constant", "optim.warmup_steps=0", "optim.warmup_ratio=0",
        "optim.weight_decay=0", f"optim.max_grad_norm={MAX_GRAD_NORM}", "checkpoint.save_every=0",
        "log.progress=false", "log.every=1"])

    # The same update window as TRL's: from the step's first training forward (policy_loss) to the
    # end of its optimizer step (clip, optimizer, schedule, zero_grad). Both are looked up at call time.
    split = Split()
    wrapped = hasattr(stage, "policy_loss") and hasattr(loop, "optimizer_step")
    if wrapped:
        stage.policy_loss = split.mark_first(stage.policy_loss, "update_start")
        step_fn = split.mark_last(loop.optimizer_step, "update_end")

        def closing_step(*a, **kw):
            result = step_fn(*a, **kw)
            sync(device)
            split.close()
            return result

        loop.optimizer_step = closing_step
    t0 = time.perf_counter()
    stage.run_grpo(cfg)
    total_s = time.perf_counter() - t0
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "gen_s" in r]
    assert [r["step"] for r in rows] == list(range(1, steps + 1)), \
        f"expected one metrics row per step, got steps {[r['step'] for r in rows]}"
    seconds = rows[-1]["time"] - rows[0]["time"]  # end of step 1 -> end of the last one
    counted = rows[1:]
    completions_per_step = batch * n
    split_s = {k: sum(r[k] for r in counted) for k in ("gen_s", "prep_s")}
    # alignkit's own training time: its train_tokens_per_s is response tokens / (step seconds - gen_s - prep_s)
    from_metrics = sum(r["response_length"] * completions_per_step / r["train_tokens_per_s"] for r in counted) \
        if all("train_tokens_per_s" in r and "response_length" in r for r in counted) else None
    if wrapped and len(split.steps) == steps and all("update_s" in s for s in split.steps):
        split_s["update_s"] = sum(s["update_s"] for s in split.steps[1:])
    else:
        split_s["update_s"] = from_metrics
    split_s["other_s"] = None if split_s["update_s"] is None else \
        seconds - split_s["gen_s"] - split_s["prep_s"] - split_s["update_s"]
    write_result(work, "alignkit", row, {
        "system": system, "completions": (steps - 1) * completions_per_step, "seconds": seconds, "split_s": split_s,
        "update_s_from_metrics": from_metrics, "step_s": [b["time"] - a["time"] for a, b in zip(rows, rows[1:])],
        "response_length": sum(r["response_length"] for r in counted) / len(counted),
        "eos_rate": 1 - sum(r["no_eos"] for r in counted) / len(counted), "beta": beta, "aggregation": aggregation,
        "total_s": total_s, "last_row": rows[-1],
        "versions": {**versions(), "alignkit": getattr(alignkit, "__version__", "?")}})


if __name__ == "__main__":
    main()
