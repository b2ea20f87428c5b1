"""Best-of-n: sample n responses per prompt, score them (a reward model and/or reward functions), keep the best.

setup   run dir, prompts (sharded over processes), the policy, the reward model with its offset
loop    per batch of prompts: n samples each (one batched generate with the KV cache), the reward
        model's score for every sample; a progress bar with rate and ETA
save    data.jsonl: the best eligible response per prompt as an SFT row ({"messages": [...]}), ready
        for `alignkit sft` (rejection-sampling fine-tuning); samples.jsonl: all n with scores;
        report.json, metrics.jsonl and reward_vs_n.png: the mean reward best-of-k reaches for
        k = 1, 2, 4, .. n, estimated from the same n samples (rl/selection.py)
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from alignkit.config import BestOfNConfig
from alignkit.data.prompts import read_prompt_rows
from alignkit.models import load_tokenizer
from alignkit.models.loading import load_policy
from alignkit.models.reward import load_reward_model
from alignkit.rl.rollout import decode_responses, sample_rollout
from alignkit.rl.scoring import combined_scorer, reward_model_scorer
from alignkit.rl.selection import expected_best_of_k, expected_pick_of_k, pick_best
from alignkit.training.batching import shard
from alignkit.training.metrics import MetricsWriter
from alignkit.training.plots import plot_metrics
from alignkit.training.progress import ProgressBar
from alignkit.training.run import make_accelerator, prepare_run_dir, quiet_libraries, say, seed_per_process
from alignkit.training.seed import seed_everything

DATA_FILE = "data.jsonl"


def run_best_of_n(cfg: BestOfNConfig) -> Path:
    """Write the best-of-n data set; return its path (output_dir/data.jsonl)."""
    # ---------------------------------------------------------------- setup
    quiet_libraries()
    accelerator = make_accelerator("fp32")
    run_dir = Path(cfg.output_dir)
    if cfg.resume and (run_dir / DATA_FILE).is_file():
        say(accelerator, f"[green]{run_dir / DATA_FILE} is complete; nothing to resume")
        return run_dir / DATA_FILE
    run_dir = prepare_run_dir(cfg.output_dir, cfg, cfg.resume, accelerator.is_main_process)
    accelerator.wait_for_everyone()
    seed_everything(cfg.seed)
    seed_per_process(accelerator, cfg.seed)
    prompts, prompt_rows = read_prompt_rows(cfg.prompts_path)
    prompts, prompt_rows = prompts[: cfg.limit or None], prompt_rows[: cfg.limit or None]
    mine = shard(list(range(len(prompts))), accelerator.process_index, accelerator.num_processes)
    device = accelerator.device
    policy = load_policy(cfg.model).requires_grad_(False).to(device)  # sampled, never trained
    tokenizer = load_tokenizer(cfg.model.path, cfg.model.trust_remote_code)
    model_score = None
    if cfg.reward_model:
        reward, offset = load_reward_model(cfg.reward_model)
        reward.to(device)
        model_score = reward_model_scorer(reward, load_tokenizer(cfg.reward_model), offset, cfg.score_batch_size)
    score = combined_scorer(cfg.rewards, model_score, cfg.reward_model_weight)
    say(accelerator, f"best-of-{cfg.n} on {len(prompts)} prompts ({cfg.n * len(prompts)} samples), scored by "
                     + " + ".join(([f"reward model {cfg.reward_model} (offset {offset:+.3f})"] if cfg.reward_model else [])
                                  + [str(spec.get("fn")) for spec in cfg.rewards]))

    # ---------------------------------------------------------------- loop
    rows: list[dict[str, Any]] = []
    batches = [mine[i:i + cfg.batch_size] for i in range(0, len(mine), cfg.batch_size)]
    t0 = time.perf_counter()
    with ProgressBar(len(batches), 0, "best-of-n", accelerator.is_main_process) as bar:
        for b, batch in enumerate(batches):
            convs = [prompts[i] for i in batch for _ in range(cfg.n)]
            s = cfg.sampling
            roll = sample_rollout(policy, tokenizer, convs, s.max_new_tokens, s.temperature, s.top_p, s.top_k)
            texts = decode_responses(tokenizer, roll)
            scores = score(convs, texts, [prompt_rows[i] for i in batch for _ in range(cfg.n)])[0]
            ended = roll.ended.cpu().tolist()
            for j, i in enumerate(batch):
                part = slice(j * cfg.n, (j + 1) * cfg.n)
                rows.append({"index": i, "responses": texts[part], "scores": scores[part].tolist(),
                             "ended": ended[part]})
            bar.update(b + 1, samples_s=round(len(rows) * cfg.n / (time.perf_counter() - t0), 1))

    # ---------------------------------------------------------------- save
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        rows = gather_object(rows)
    if accelerator.is_main_process:
        rows.sort(key=lambda r: r["index"])
        report = write_outputs(cfg, run_dir, prompts, rows)
        say(accelerator, "mean reward, best of k: " + ", ".join(f"{k}: {v:+.3f}" for k, v in report["curve"].items())
            + f"; {100 * report['no_eos_share']:.0f}% of samples never ended")
        say(accelerator, f"[green]wrote {run_dir / DATA_FILE}; curve in {run_dir / 'reward_vs_n.png'}")
    accelerator.wait_for_everyone()
    return run_dir / DATA_FILE


def ks_for(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself."""
    ks = [1]
    while ks[-1] * 2 <= n:
        ks.append(ks[-1] * 2)
    return ks if ks[-1] == n else [*ks, n]


def write_outputs(cfg: BestOfNConfig, run_dir: Path, prompts: list, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """data.jsonl, samples.jsonl, report.json, metrics.jsonl and the plot; returns the report."""
    scores = torch.tensor([r["scores"] for r in rows], dtype=torch.float64)
    ended = torch.tensor([r["ended"] for r in rows], dtype=torch.bool)
    best = pick_best(scores, ended if cfg.require_eos else None).tolist()
    # The curve measures the pick rule itself: with require_eos, samples that never ended are not
    # picked (unless none of the k did), so they do not count towards the gain either.
    curve = {k: float((expected_pick_of_k(scores, k, ended) if cfg.require_eos else expected_best_of_k(scores, k)).mean())
             for k in ks_for(cfg.n)}
    chosen = scores[torch.arange(len(rows)), torch.tensor(best)]
    with open(run_dir / DATA_FILE, "w") as data, open(run_dir / "samples.jsonl", "w") as samples:
        for r, b, score in zip(rows, best, chosen.tolist()):
            conv = prompts[r["index"]]
            data.write(json.dumps({"messages": [*conv, {"role": "assistant", "content": r["responses"][b]}],
                                   "reward": score}) + "\n")
            samples.write(json.dumps({"messages": conv, "responses": r["responses"], "scores": r["scores"],
                                      "ended": r["ended"], "best": b}) + "\n")
    report = {"n": cfg.n, "prompts": len(rows), "curve": curve, "selected_mean_reward": float(chosen.mean()),
              # prompts whose n samples all hit the length limit: their pick never ended (require_eos)
              "prompts_without_an_ended_sample": int((~ended.any(dim=1)).sum()),
              "gain_over_one_sample": curve[cfg.n] - curve[1], "no_eos_share": float((~ended).double().mean()),
              "require_eos": cfg.require_eos}
    (run_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    metrics = MetricsWriter(run_dir, True, False)
    for k, v in curve.items():  # step = k, so `alignkit plot` draws reward against n
        metrics.write(k, reward_best_of_k=v)
    metrics.close()
    plot_metrics(metrics.path, run_dir / "reward_vs_n.png", title="best-of-n: mean reward of the best of k (x: k)")
    return report
