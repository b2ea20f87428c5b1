"""On-policy ranking rounds: iterated RLHF after the first PPO run.

Each round, under run_dir/rounds/round-R:
    samples.jsonl    the current policy's k different responses to a fresh draw of RL prompts
    rankings.jsonl   those responses rated (the demo: the world's annotator; people: the blind sheet of
                     `alignkit data export-ranking` / `import-ranking`)
    rm/              the reward model, continued from the current one on every ranking so far
    ppo/             PPO, continued from the current policy against it (the SFT model stays the KL anchor)
    round.json       what the round measured, first of all the current reward model's pairwise
                     accuracy on the new samples *before* it trains on them: how well it generalises to
                     the distribution PPO moved the policy to (the reason for on-policy data).

The reward model sees the world's rankings and each round's; a round that finished is skipped on a
rerun, a started one resumes (the rm and ppo stages resume from their checkpoints).
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alignkit.training.run import console

Rate = Callable[[list[dict[str, Any]], int], list[dict[str, Any]]]
"""(rows {"prompt", "responses", ...}, round) -> rated rows {"prompt", "responses", "scores" or best first}."""


def draw_prompts(rows: list[dict[str, Any]], n: int, seed: int, round_: int) -> list[dict[str, Any]]:
    """n RL prompt rows for a round: a seeded draw, another each round (all rows when n exceeds them)."""
    order = list(range(len(rows)))
    random.Random(f"{seed}:round-{round_}").shuffle(order)
    return [rows[i] for i in sorted(order[:n])]


def sample_round(policy_dir: str | Path, rows: list[dict[str, Any]], k: int, temperature: float,
                 max_new_tokens: int, seed: int) -> tuple[list[dict[str, Any]], int]:
    """The policy's k different sampled responses per prompt row; (rows with "responses", dropped)."""
    import torch

    from alignkit.models import load_causal_lm, load_tokenizer
    from alignkit.models.generate import sample_for_ranking

    torch.manual_seed(seed)
    return sample_for_ranking(load_causal_lm(policy_dir), load_tokenizer(policy_dir), rows, k, temperature,
                              max_new_tokens)


def pair_accuracy(reward_dir: str | Path, rated: list[dict[str, Any]], batch_size: int = 64) -> dict[str, Any]:
    """The reward model's pairwise accuracy on rated rows: the share of ordered pairs (better, worse)
    it scores the right way round (ties give no pair), overall and per `source`."""
    from alignkit.data.preferences import rankings_to_pairs, to_ranking
    from alignkit.data.records import Record
    from alignkit.models import load_tokenizer
    from alignkit.models.reward import load_reward_model, score_conversations

    pairs = [p for i, row in enumerate(rated) for p in rankings_to_pairs(to_ranking(Record(row, f"row {i + 1}")))]
    if not pairs:
        return {"accuracy": float("nan"), "n_pairs": 0, "by_source": {}}
    model, _ = load_reward_model(reward_dir)
    tokenizer = load_tokenizer(reward_dir)
    prompts = [list(p.prompt) for p in pairs]
    chosen = score_conversations(model, tokenizer, prompts, [p.chosen for p in pairs], batch_size=batch_size)
    rejected = score_conversations(model, tokenizer, prompts, [p.rejected for p in pairs], batch_size=batch_size)
    right = (chosen > rejected).tolist()
    by_source: dict[str, list[bool]] = {}
    for p, ok in zip(pairs, right):
        by_source.setdefault(p.source or "all", []).append(ok)
    return {"accuracy": sum(right) / len(right), "n_pairs": len(right),
            "by_source": {s: sum(v) / len(v) for s, v in sorted(by_source.items())}}


def run_rounds(cfg: Any, run_dir: Path, sft_dir: Path, policy_dir: Path, reward_dir: Path, world: dict[str, Path],
               rate: Rate) -> tuple[Path, Path, list[dict[str, Any]]]:
    """cfg.rounds.rounds rounds from `policy_dir` (the PPO policy) and `reward_dir` (its reward model);
    returns (the last policy, the last reward model, each round's record)."""
    from alignkit.config import pipeline_ppo_config
    from alignkit.stages.ppo import run_ppo
    from alignkit.stages.rm import run_rm

    # ---------------------------------------------------------------- setup
    r = cfg.rounds
    prompt_rows = [json.loads(line) for line in world["rl_prompts"].read_text().splitlines() if line.strip()]
    rankings = [world["rankings"]]
    records = []
    # ---------------------------------------------------------------- loop
    for round_ in range(1, r.rounds + 1):
        out = run_dir / "rounds" / f"round-{round_}"
        out.mkdir(parents=True, exist_ok=True)
        done = out / "round.json"
        rated_path = out / "rankings.jsonl"
        if not done.is_file():
            console.print(f"[bold]rounds[/] round {round_}: {r.k} samples per prompt from {policy_dir}")
            rows, dropped = sample_round(policy_dir, draw_prompts(prompt_rows, r.prompts, cfg.ppo.seed, round_), r.k,
                                         r.temperature, r.max_new_tokens, cfg.ppo.seed * 1000 + round_)
            (out / "samples.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
            rated = rate(rows, round_)
            rated_path.write_text("".join(json.dumps(x) + "\n" for x in rated))
            before = pair_accuracy(reward_dir, rated)
            console.print(f"[bold]rounds[/] round {round_}: {len(rated)} rated prompts, {before['n_pairs']} pairs; the "
                          f"reward model orders {100 * before['accuracy']:.0f}% of them right before training on them")
        rankings.append(rated_path)
        combined = out / "all_rankings.jsonl"
        combined.write_text("".join(p.read_text() for p in rankings))
        rm_cfg = dataclasses.replace(
            cfg.rm, output_dir=str(out / "rm"), resume=True, model=dataclasses.replace(cfg.rm.model, path=str(reward_dir)),
            data=dataclasses.replace(cfg.rm.data, train_path=str(combined)),
            train=dataclasses.replace(cfg.rm.train, max_steps=r.rm_steps),
            normalize=dataclasses.replace(cfg.rm.normalize, prompts_path=str(world["rl_prompts"]),
                                          policy_path=str(policy_dir)))
        rm_cfg.validate(f"rounds (round {round_}, rm)")
        new_reward = run_rm(rm_cfg)
        ppo_cfg = pipeline_ppo_config(cfg.ppo, out / "ppo", policy_dir, new_reward, world)
        ppo_cfg = dataclasses.replace(ppo_cfg, reference_model=str(sft_dir),
                                      train=dataclasses.replace(ppo_cfg.train, max_steps=r.ppo_steps))
        ppo_cfg.validate(f"rounds (round {round_}, ppo)")
        final = run_ppo(ppo_cfg)
        best = out / "ppo" / "best"
        new_policy = best if cfg.ppo.keep_best and (best / "config.json").exists() else final
        if not done.is_file():
            rated = [json.loads(line) for line in rated_path.read_text().splitlines() if line.strip()]
            record = {"round": round_, "policy": str(policy_dir), "rated_prompts": len(rated),
                      "dropped_prompts": len(rows) - len(rated) + dropped, "pairs_added": before["n_pairs"],
                      "rm_accuracy_on_new_samples_before": before["accuracy"],
                      "rm_accuracy_on_new_samples_before_by_source": before["by_source"],
                      "rm_accuracy_on_new_samples_after_training_on_them": pair_accuracy(new_reward, rated)["accuracy"]}
            done.write_text(json.dumps(record, indent=2) + "\n")
        records.append(json.loads(done.read_text()))
        policy_dir, reward_dir = new_policy, new_reward
    # ---------------------------------------------------------------- save
    return policy_dir, reward_dir, records
