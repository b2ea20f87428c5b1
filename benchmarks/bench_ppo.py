"""PPO speed, side by side: alignkit `run_ppo` vs TRL 1.12's `PPOTrainer`, on CPU, in one command.

TRL removed PPO after 1.12.0, and the venv's TRL is newer, so the TRL side imports trl 1.12.0 from a
directory of its own (--trl-dir; install it with the pip command the script prints when it is
missing). The two TRL versions cannot share a process, so this script runs each side in a child
process of itself (`--side trl`, then `--side alignkit`), one after the other, and the parent prints
both numbers and their ratio. Both children get the same torch thread count.

Held equal: four tiny models built once and loaded by both sides from the same directories: the
policy (= the SFT model; a tiny Llama, hidden 256, 4 layers, ~4.5M parameters, random weights), the
reference (the policy's weights: alignkit loads model.path again, TRL gets a second copy from the
same directory), the reward model (LlamaForSequenceClassification, num_labels=1, backbone = the
policy's weights, a fresh seeded scalar head) and the critic (a copy of the reward model: alignkit
value_model=reward, TRL value_model loaded from the reward model's directory). The prompts (the same
seeded short chat prompts; alignkit reads them as JSONL {"prompt"}, TRL as input_ids the child
tokenises with the same chat template and generation prompt; the child checks the ids equal
alignkit's `encode_prompts`), left-padded per batch on both sides. The rollout batch (prompts per
iteration: alignkit train.batch_size, TRL per_device_train_batch_size x gradient_accumulation_steps
(1)), the response length (alignkit rollout.max_new_tokens = TRL response_length; sampling stops at
EOS once every row has one), temperature 1.0, no top-k/top-p, PPO epochs per rollout batch
(ppo.epochs = num_ppo_epochs) and optimizer steps per epoch (ppo.minibatches = num_mini_batches:
both split the rollout batch into that many minibatches, one optimizer step each, no accumulation),
learning rate with linear decay to 0 and no warmup, AdamW (0.9, 0.999, eps 1e-8, no weight decay),
no gradient clipping (TRL's PPO loop never clips, so alignkit runs with optim.max_grad_norm=0), the
k1 KL estimate with the same coefficient, clip 0.2, value clip 0.2, vf_coef 0.1, gamma 1, lambda
0.95, advantages whitened and rewards not, the learning-rate schedule stepped once per iteration
(both trainers do), 1 subtracted from the score of a response that never ends (TRL
missing_eos_penalty=1; alignkit rollout.no_eos_penalty=1, which its stage subtracts the same way: the
child checks this on alignkit's `final_scores` and records it), fp32, dropout off (both), and no
checkpoints, evaluation or sample generations during the run. TRL is set as FACTS.md
says for a fair CPU run: bf16=False, gradient_checkpointing=False, use_cpu=True, report_to="none";
also num_sample_generations=0 (otherwise it generates debugging samples inside the timed loop),
local_rollout_forward_batch_size = the rollout batch (one generation call and one no-grad forward
chunk per iteration, as alignkit), and its per-step console printer removed (alignkit runs with
log.progress=false).

Not the same, on purpose or by design (none of it should move the speed much, but it is named):
- TRL takes the rollout log-probs from generate's own scores; alignkit recomputes them with one more
  no-grad forward of the policy (so its PPO ratio starts at exactly 1). That forward is alignkit's
  cost, counted in its score_s.
- TRL runs the critic on the untruncated sequences and the reward model on the EOS-truncated ones;
  its train forwards run policy and critic side by side (PolicyAndValueWrapper).
- alignkit runs its no-grad forwards in chunks of the minibatch (rollout batch / minibatches), TRL in
  chunks of local_rollout_forward_batch_size (here the whole rollout batch).
- alignkit scores responses by text (decoded, then tokenised with the reward model's own tokenizer
  and template, so a reward model with another tokenizer works); TRL feeds the policy's token ids
  to the reward model as they are. Here both tokenizers are the same.
- The models are untrained, so few responses end with EOS (the eos % column) and sampling runs to
  the full response length on both sides.
- The two sides sample different prompts and tokens (their own RNG streams), so widths and EOS
  rates differ a little from iteration to iteration.

Timing: iteration 1 of each side is a warm-up and is not counted; the clock runs from the end of
iteration 1 to the end of the last iteration (alignkit: the `time` of metrics.jsonl rows, one per
iteration, log.every=1; TRL: a callback at on_step_end, which TRL calls once per iteration after the
PPO update, its metrics and the learning-rate step). An "episode" is one prompt with its sampled
response, so episodes/s = (iterations - 1) x rollout batch / those seconds: sampling, scoring and the
PPO epochs are all inside. Model loading, tokenising and saving are outside (`total_s` in the JSON,
the child's whole train call, includes them). Where the time goes (seconds summed over the counted
iterations): alignkit reports gen_s (sampling), score_s (its `experience`: the policy's log-prob and
critic forward, the reference forward, the reward model by text, KL rewards, GAE, whitening) and
train_s (the PPO epochs and the schedule step; shown as update) in its metrics rows, and other = the
rest (metrics, prompt selection); for TRL the child wraps TRL's module-level functions with timers: gen_s =
`batch_generation` (generate, including its output scores), score_s = the no-grad `forward` of the
reference and `get_reward` of critic and reward model, update_s = from the first training forward to
the end of the last optimizer step of the iteration (the PPO epochs), gc_s = TRL's explicit
`gc.collect()` calls (two per iteration), and other_s = whatever is left (GAE, whitening, metrics,
callbacks, the schedule step, gc_s). Timings on a shared 2-core machine are noisy: the contention reading is printed and
saved; with another process busy, prefer --threads 1.

    python benchmarks/bench_ppo.py                 # 10 iterations x 64 prompts, 32 new tokens, 512 prompts
    python benchmarks/bench_ppo.py --quick         # a smoke run: 3 iterations x 16 prompts, 16 new tokens
    python benchmarks/bench_ppo.py --only trl      # one side (e.g. while the other does not run)
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

from common import WORDS, bench_llama  # benchmarks/common.py
from contention import ContentionMeter  # benchmarks/contention.py, beside this script
from rl_common import ChildMeter, Split, make_prompts, prompt_ids_alignkit, versions  # beside this script

TRL_VERSION = "1.12.0"
TRL_DIR_ENV = "ALIGNKIT_BENCH_TRL112"
DEFAULT_TRL_DIR = Path(os.environ.get(TRL_DIR_ENV, "~/.cache/alignkit-bench/trl112")).expanduser()
LR, KL_COEF, NO_EOS_PENALTY = 1e-5, 0.05, 1.0  # the penalty is subtracted, on both sides


# --------------------------------------------------------------------------------------------
# The parent: builds the models and prompts once, runs each side in a child, compares
# --------------------------------------------------------------------------------------------

def build_models(work: Path, prompts: list[str], seed: int) -> dict[str, int]:
    """work/policy (causal LM + tokenizer) and work/rm (sequence classification, num_labels=1, + tokenizer)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rng = random.Random(seed + 1)
    corpus = prompts[:1000] + [" ".join(rng.choices(WORDS, k=40)) for _ in range(500)]
    policy, tokenizer = bench_llama(work / "policy", corpus, seed)
    torch.manual_seed(seed + 2)  # the fresh scalar head
    rm = AutoModelForSequenceClassification.from_pretrained(str(work / "policy"), num_labels=1, dtype=torch.float32)
    rm.config.pad_token_id = tokenizer.pad_token_id
    rm.save_pretrained(work / "rm", safe_serialization=True)
    AutoTokenizer.from_pretrained(str(work / "policy")).save_pretrained(work / "rm")
    return {"policy_params": sum(p.numel() for p in policy.parameters()),
            "reward_params": sum(p.numel() for p in rm.parameters()), "vocab": len(tokenizer)}


def run_child(side: str, work: Path, trl_dir: Path, verbose: bool) -> dict:
    log = work / f"{side}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--work", str(work),
           "--trl-dir", str(trl_dir)]
    meter = ChildMeter()
    t0 = time.perf_counter()
    with log.open("w") as fh:
        rc = subprocess.run(cmd, stdout=None if verbose else fh, stderr=subprocess.STDOUT if not verbose else None,
                            cwd=str(Path(__file__).parent)).returncode
    wall = time.perf_counter() - t0
    result_path = work / f"result-{side}.json"
    if result_path.is_file():
        result = json.loads(result_path.read_text())
    else:
        tail = "" if verbose else "\n".join(log.read_text().splitlines()[-25:])
        result = {"system": side, "error": f"child exited with status {rc} and no result", "log_tail": tail}
        print(f"--- {side} failed (status {rc}); last lines of its output:\n{tail}\n---")
    result.update(process_s=wall, other_processes_cores=meter.others())
    return result


def resolve_trl_dir(path: Path) -> Path:
    if (path / "trl" / "experimental" / "ppo" / "ppo_trainer.py").is_file():
        return path
    sys.exit(f"bench_ppo: TRL {TRL_VERSION} (the last release with PPO) not found in {path}.\n"
             f"Install it apart from the venv's TRL, then rerun (or pass --trl-dir / set {TRL_DIR_ENV}):\n\n"
             f"    pip install --no-deps --target {path} trl=={TRL_VERSION}\n"
             f"    pip install requests   # trl {TRL_VERSION} imports it\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--iterations", type=int, default=10, help="PPO iterations (rollout + update) per side")
    p.add_argument("--batch-size", type=int, default=64, help="prompts per iteration (the rollout batch)")
    p.add_argument("--prompts", type=int, default=512)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--epochs", type=int, default=2, help="PPO epochs per rollout batch")
    p.add_argument("--minibatches", type=int, default=2, help="optimizer steps per PPO epoch")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=("trl", "alignkit", "alignkit_head"), help="run one side")
    p.add_argument("--no-value-head", action="store_true",
                   help="skip the extra alignkit row with value_model=policy_head (a head on the policy: 3 models)")
    p.add_argument("--trl-dir", type=Path, default=DEFAULT_TRL_DIR,
                   help=f"a directory holding trl {TRL_VERSION} (pip --target); default ${TRL_DIR_ENV} or %(default)s")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 iterations x 16 prompts, 16 new tokens")
    p.add_argument("--verbose", action="store_true", help="show the children's output as it comes")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "ppo.json"))
    p.add_argument("--side", choices=("trl", "alignkit", "alignkit_head"), help=argparse.SUPPRESS)  # child mode
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side:
        settings = json.loads((args.work / "settings.json").read_text())
        torch.set_num_threads(settings["threads"])
        if args.side == "trl":
            side_trl(settings, args.work, args.trl_dir)
        else:
            side_alignkit(settings, args.work, args.trl_dir, args.side)
        return

    if args.quick:
        args.iterations, args.batch_size, args.prompts, args.max_new_tokens = 3, 16, 64, 16
    assert args.iterations >= 2, "iteration 1 is a warm-up; use --iterations >= 2"
    assert args.batch_size % args.minibatches == 0, "--batch-size must divide into --minibatches equal parts"
    sides = [args.only] if args.only else ["trl", "alignkit"] + ([] if args.no_value_head else ["alignkit_head"])
    trl_dir = resolve_trl_dir(args.trl_dir.expanduser().resolve()) if "trl" in sides else args.trl_dir
    meter = ChildMeter()
    settings = {k: v for k, v in vars(args).items()
                if k not in ("side", "work", "trl_dir", "out", "verbose", "no_value_head")}
    settings.update(lr=LR, kl_coef=KL_COEF, no_eos_penalty=NO_EOS_PENALTY, temperature=1.0,
                    counted_iterations=args.iterations - 1, trl_dir=str(trl_dir))

    with tempfile.TemporaryDirectory(prefix="bench_ppo_") as tmp:
        work = Path(tmp)
        prompts = make_prompts(args.prompts, args.seed)
        (work / "prompts.jsonl").write_text("".join(json.dumps({"prompt": q}) + "\n" for q in prompts))
        settings.update(build_models(work, prompts, args.seed))
        (work / "prompt_ids.json").write_text(json.dumps(prompt_ids_alignkit(work, prompts)))
        lengths = [len(x) for x in json.loads((work / "prompt_ids.json").read_text())]
        settings["prompt_tokens_mean"] = sum(lengths) / len(lengths)
        (work / "settings.json").write_text(json.dumps(settings))
        results = []
        for side in sides:
            print(f"running the {side} side ...", flush=True)
            results.append(run_child(side, work, trl_dir, args.verbose))

    others = meter.others()
    ok = [r for r in results if "error" not in r]
    for r in ok:
        r["episodes_per_s"] = r["episodes"] / r["seconds"]
    trl = next((r for r in ok if r["side"] == "trl"), None)
    ak = next((r for r in ok if r["side"] == "alignkit"), None)
    ratio = ak["episodes_per_s"] / trl["episodes_per_s"] if trl and ak else None
    for r in ok:
        if trl:
            r["ratio_vs_trl"] = r["episodes_per_s"] / trl["episodes_per_s"]

    print(f"\nPPO, {settings['policy_params'] / 1e6:.1f}M-param Llama policy (+ reference, reward model, critic), "
          f"{args.batch_size} prompts/iteration, {args.max_new_tokens} new tokens, {args.epochs} PPO epochs x "
          f"{args.minibatches} minibatches, {args.iterations} iterations (1 = warm-up, not counted), "
          f"{args.threads} threads")
    print(f"{'system':<42}{'iters':>6}{'episodes':>9}{'seconds':>9}{'ep/s':>7}{'vs TRL':>8}"
          f"{'gen':>7}{'score':>7}{'update':>8}{'other':>7}{'eos %':>7}")
    for r in results:
        if "error" in r:
            print(f"{r['system']:<42}  failed: {r['error'][:100]}")
            continue
        s = r["split_s"]
        vs = f"{r['ratio_vs_trl']:>7.2f}x" if "ratio_vs_trl" in r else f"{'':>8}"
        eos = f"{100 * r['eos_rate']:>6.0f}%" if r.get("eos_rate") is not None else f"{'-':>7}"
        fmt = lambda k: f"{s[k]:>7.1f}" if s.get(k) is not None else f"{'-':>7}"  # noqa: E731
        print(f"{r['system']:<42}{args.iterations - 1:>6}{r['episodes']:>9}{r['seconds']:>9.2f}"
              f"{r['episodes_per_s']:>7.2f}{vs}{fmt('gen_s')}{fmt('score_s')} {fmt('update_s')}{fmt('other_s')}{eos}")
    print("(gen/score/update/other: seconds over the counted iterations; TRL's `other` includes gc_s "
          f"{trl['split_s']['gc_s']:.1f} s of explicit gc.collect())" if trl else "")
    if trl and not trl.get("same_prompt_ids_as_alignkit", False):
        print("warning: TRL and alignkit tokenised some prompts differently")
    if ratio is not None:
        print(f"alignkit / TRL episodes per second: {ratio:.2f}x")
    busy = max([others] + [r.get("other_processes_cores", 0.0) for r in results])
    if args.threads + busy > (os.cpu_count() or 1) + 0.2:  # oversubscribed: the numbers may be far off
        ContentionMeter.warn(busy)
    elif busy > 0.2:
        print(f"note: other processes kept {busy:.1f} of {os.cpu_count()} cores busy; {args.threads} thread(s) "
              "still had cores of their own")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"settings": {**settings, "other_processes_cores": others, "versions": versions()},
                               "ratio_alignkit_vs_trl": ratio, "results": results}, indent=2) + "\n")
    print(f"wrote {out}")


# --------------------------------------------------------------------------------------------
# The children: one side each, in a process of its own
# --------------------------------------------------------------------------------------------

def write_result(work: Path, side: str, result: dict) -> None:
    (work / f"result-{side}.json").write_text(json.dumps({"side": side, **result}, indent=2))


def side_trl(settings: dict, work: Path, trl_dir: Path) -> None:
    sys.path.insert(0, str(trl_dir))  # trl 1.12.0 ahead of the venv's newer trl, in this process only
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import gc
    import types

    import trl
    import trl.experimental.ppo.ppo_trainer as pt
    from datasets import Dataset
    from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer,
                              PrinterCallback, TrainerCallback)
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    if trl.__version__ != TRL_VERSION:
        print(f"warning: expected trl {TRL_VERSION} from {trl_dir}, imported {trl.__version__} from {trl.__file__}")
    n_iter, batch = settings["iterations"], settings["batch_size"]
    tokenizer = AutoTokenizer.from_pretrained(str(work / "policy"), padding_side="left")
    prompts = [json.loads(line)["prompt"] for line in (work / "prompts.jsonl").read_text().splitlines()]
    ids = [tokenizer(tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                                   add_generation_prompt=True), add_special_tokens=False)["input_ids"]
           for q in prompts]
    same = ids == json.loads((work / "prompt_ids.json").read_text())
    train = Dataset.from_dict({"input_ids": ids})

    split = Split()
    pt.batch_generation = split.timed(pt.batch_generation, "gen_s")
    pt.get_reward = split.timed(pt.get_reward, "score_s")  # critic (full sequences) and reward model
    no_grad, grad = (lambda: not torch.is_grad_enabled()), torch.is_grad_enabled
    # `forward` serves the reference (no grad) and the training forwards of policy + critic (grad).
    pt.forward = split.mark_first(split.timed(pt.forward, "score_s", when=no_grad), "update_start", when=grad)
    pt.gc = types.SimpleNamespace(collect=split.timed(gc.collect, "gc_s"))
    widths, eos_counts = [], []
    generation = pt.batch_generation

    def counting_generation(model, queries, *a, **kw):
        query_responses, logits = generation(model, queries, *a, **kw)
        responses = query_responses[:, queries.shape[1]:]
        widths.append(responses.shape[1])
        eos_counts.append(int((responses == tokenizer.eos_token_id).any(dim=1).sum()))
        return query_responses, logits

    pt.batch_generation = counting_generation

    class Clock(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []

        def on_step_end(self, args_, state, control, **kw):
            self.ends.append(time.perf_counter())
            split.close()

    config = PPOConfig(
        output_dir=str(work / "trl-out"), per_device_train_batch_size=batch, gradient_accumulation_steps=1,
        num_mini_batches=settings["minibatches"], num_ppo_epochs=settings["epochs"], total_episodes=n_iter * batch,
        local_rollout_forward_batch_size=batch, response_length=settings["max_new_tokens"],
        temperature=settings["temperature"], stop_token="eos", missing_eos_penalty=NO_EOS_PENALTY,
        kl_coef=KL_COEF, kl_estimator="k1", cliprange=0.2, cliprange_value=0.2, vf_coef=0.1, gamma=1.0, lam=0.95,
        whiten_rewards=False, learning_rate=LR, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
        adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, num_sample_generations=0,
        bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True, report_to="none", save_strategy="no",
        eval_strategy="no", logging_steps=1, disable_tqdm=True, dataloader_num_workers=0, seed=settings["seed"])
    t0 = time.perf_counter()
    load = lambda cls, d: cls.from_pretrained(str(work / d), dtype=torch.float32)  # noqa: E731
    clock = Clock()
    trainer = PPOTrainer(args=config, processing_class=tokenizer, model=load(AutoModelForCausalLM, "policy"),
                         ref_model=load(AutoModelForCausalLM, "policy"),
                         reward_model=load(AutoModelForSequenceClassification, "rm"), train_dataset=train,
                         value_model=load(AutoModelForSequenceClassification, "rm"),
                         eval_dataset=train.select(range(min(8, len(train)))), callbacks=[clock])
    trainer.remove_callback(PrinterCallback)  # prints the metrics dict every iteration
    trainer.optimizer.step = split.mark_last(trainer.optimizer.step, "update_end")
    trainer.train()
    total_s = time.perf_counter() - t0
    assert len(clock.ends) == n_iter and len(split.steps) == n_iter, (len(clock.ends), len(split.steps))
    counted = split.steps[1:]
    seconds = clock.ends[-1] - clock.ends[0]
    split_s = {k: sum(s.get(k, 0.0) for s in counted) for k in ("gen_s", "score_s", "update_s", "gc_s")}
    split_s["other_s"] = seconds - split_s["gen_s"] - split_s["score_s"] - split_s["update_s"]
    write_result(work, "trl", {
        "system": f"TRL {trl.__version__} PPOTrainer", "episodes": (n_iter - 1) * batch, "seconds": seconds,
        "split_s": split_s, "iteration_s": [b - a for a, b in zip(clock.ends, clock.ends[1:])],
        "response_widths": widths, "eos_rate": sum(eos_counts[1:]) / ((n_iter - 1) * batch),
        "same_prompt_ids_as_alignkit": same, "total_s": total_s,
        "final_metrics": {k: v for k, v in (trainer.state.log_history or [{}])[-1].items()
                          if k in ("objective/scores", "objective/kl", "policy/approxkl_avg", "val/ratio", "lr")},
        "versions": {**versions(), "trl": trl.__version__, "trl_file": trl.__file__}})


def side_alignkit(settings: dict, work: Path, trl_dir: Path, side: str = "alignkit") -> None:
    """The alignkit row: the same four models (value_model=reward); side alignkit_head instead puts
    the critic as a linear head on the policy (three models: no second backbone to run and train)."""
    import alignkit
    from alignkit.config import PPOConfig, load_config
    from alignkit.training.metrics import read_metrics

    value_model = "policy_head" if side == "alignkit_head" else "reward"
    system = "alignkit run_ppo" + (" (value head on policy)" if value_model == "policy_head" else "")
    try:
        from alignkit.stages.ppo import run_ppo
    except ImportError as exc:
        write_result(work, side, {"system": system, "error": f"alignkit.stages.ppo is not available: {exc}"})
        return
    n_iter, batch = settings["iterations"], settings["batch_size"]
    out = work / f"{side}-out"
    try:  # what the stage does to a score 0.5 whose response never ended: TRL's rule gives 0.5 - penalty
        from alignkit.rl.experience import final_scores
        got = float(final_scores(torch.tensor([0.5]), torch.tensor([False]), NO_EOS_PENALTY, 0.0)[0])
        penalty = {"score_0.5_without_eos_becomes": got, "as_trl": abs(got - (0.5 - NO_EOS_PENALTY)) < 1e-6}
    except Exception as exc:  # noqa: BLE001 (the stage is young; record, do not fail the benchmark)
        penalty = {"error": f"{type(exc).__name__}: {exc}"}
    if not penalty.get("as_trl"):
        print(f"warning: alignkit's no-EOS penalty does not act as TRL's missing_eos_penalty: {penalty}")
    cfg = load_config(PPOConfig, None, [
        f"model.path={work / 'policy'}", f"reward_model={work / 'rm'}", f"value_model={value_model}",
        f"rollout.prompts_path={work / 'prompts.jsonl'}", f"output_dir={out}", f"seed={settings['seed']}",
        f"train.batch_size={batch}", "train.grad_accum=1", f"train.max_steps={n_iter}", "train.precision=fp32",
        f"ppo.epochs={settings['epochs']}", f"ppo.minibatches={settings['minibatches']}",
        f"rollout.max_new_tokens={settings['max_new_tokens']}", f"rollout.temperature={settings['temperature']}",
        "rollout.top_p=1.0", "rollout.top_k=0", f"rollout.no_eos_penalty={NO_EOS_PENALTY}",
        f"kl.coef={KL_COEF}", "kl.estimator=k1", "kl.target=0", "ppo.clip=0.2", "ppo.value_clip=0.2",
        "ppo.vf_coef=0.1", "ppo.entropy_coef=0", "ppo.gamma=1.0", "ppo.lam=0.95", "ppo.whiten_advantages=true",
        "ppo.whiten_rewards=false", "ppo.target_approx_kl=0",
        f"optim.lr={LR}", "optim.schedule=linear", "optim.warmup_steps=0", "optim.warmup_ratio=0",
        "optim.weight_decay=0", "optim.max_grad_norm=0", "checkpoint.save_every=0",
        "log.progress=false", "log.every=1"])
    t0 = time.perf_counter()
    run_ppo(cfg)
    total_s = time.perf_counter() - t0
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "episodes_per_s" in r]
    assert [r["step"] for r in rows] == list(range(1, n_iter + 1)), \
        f"expected one metrics row per iteration, got steps {[r['step'] for r in rows]}"
    episodes = [r["episodes"] for r in rows]
    if episodes[-1] == n_iter * batch and n_iter > 1:  # a running total
        counted_episodes = episodes[-1] - episodes[0]
    else:  # per iteration
        counted_episodes = sum(episodes[1:])
    seconds = rows[-1]["time"] - rows[0]["time"]  # end of iteration 1 -> end of the last one
    counted = rows[1:]
    split_s = {k: (sum(r[k] for r in counted) if all(k in r for r in counted) else None)
               for k in ("gen_s", "score_s", "train_s")}
    split_s["update_s"] = split_s.pop("train_s")
    known = [v for v in split_s.values() if v is not None]
    split_s["other_s"] = seconds - sum(known) if len(known) == 3 else None
    no_eos = [r["no_eos"] for r in counted if "no_eos" in r]  # share of responses without EOS
    write_result(work, side, {
        "system": system, "episodes": counted_episodes, "seconds": seconds, "split_s": split_s,
        "iteration_s": [b["time"] - a["time"] for a, b in zip(rows, rows[1:])],
        "eos_rate": 1 - sum(no_eos) / len(no_eos) if len(no_eos) == len(counted) else None,
        "no_eos_penalty_check": penalty, "total_s": total_s, "last_row": rows[-1],
        "versions": {**versions(), "alignkit": getattr(alignkit, "__version__", "?")}})


if __name__ == "__main__":
    main()
