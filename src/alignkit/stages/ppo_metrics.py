"""PPO's per-iteration figures and its held-out reward (the stage's loop reports both)."""

from __future__ import annotations

from typing import Any

import torch

from alignkit.config import PPOConfig
from alignkit.rl.advantages import masked_var
from alignkit.rl.experience import Conversation, Experience, Roles
from alignkit.rl.rollout import Rollout
from alignkit.training import engine
from alignkit.training.run import reduce_sum


def iteration_metrics(accelerator: Any, roll: Rollout, exp: Experience,
                      stats: dict[str, float]) -> dict[str, float]:
    """Per-iteration figures, rollout ones summed over all processes."""
    mask = roll.response_mask
    n = float(mask.shape[0])
    explained = 1.0 - float(masked_var(exp.returns - exp.values, mask) / masked_var(exp.returns, mask).clamp(min=1e-8))
    sums = reduce_sum(accelerator, n, float(exp.raw_scores.sum()), float(exp.rewards.sum()),
                      float(exp.kl.sum()), float(mask.sum()), float((~roll.ended).sum()),
                      *[stats[k] for k in ("policy_loss", "value_loss", "entropy", "clip_fraction", "approx_kl",
                                           "value_clip_fraction", "ptx_loss")], explained)
    total, world = sums[0], accelerator.num_processes
    per = [s / world for s in sums[6:]]
    return {"reward": sums[1] / total, "reward_penalized": sums[2] / total, "kl": sums[3] / total,
            "response_length": sums[4] / total, "no_eos": sums[5] / total,
            "policy_loss": per[0], "value_loss": per[1], "entropy": per[2], "clip_fraction": per[3],
            "approx_kl": per[4], "value_clip_fraction": per[5], **({"ptx_loss": per[6]} if per[6] else {}),
            "explained_variance": per[7], "optimizer_steps": stats["optimizer_steps"]}


@torch.no_grad()
def evaluate_reward(cfg: PPOConfig, accelerator: Any, roles: Roles, prompts: list[Conversation],
                    rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean reward (offset subtracted) of the policy's greedy responses to the held-out prompts
    (no length penalty: generate_responses keeps no record of which responses ended)."""
    from alignkit.models.generate import generate_responses

    policy = roles.module.policy
    total = n = length = cost = 0.0
    # In lockstep under ZeRO-3, where generating is a collective: every process the same batches.
    for idx, real in engine.lockstep(list(range(len(prompts))), accelerator.process_index,
                                     accelerator.num_processes, cfg.train.eval_batch_size):
        part = [prompts[i] for i in idx]
        with roles.autocast():
            texts = generate_responses(policy, roles.tokenizer, part, cfg.rollout.max_new_tokens,
                                       batch_size=cfg.train.eval_batch_size)
        if real:
            scores = roles.score(part, texts, [rows[i] for i in idx]).float()
            c = roles.constraint  # safe RLHF: the reward itself, not the penalised score; the cost beside it
            total += float((c.last_rewards if c else scores).sum())
            cost += float(c.last_costs.sum()) if c else 0.0
            n += len(part)
            length += sum(len(t.split()) for t in texts)
    total, n, length, cost = reduce_sum(accelerator, total, n, length, cost)
    return {"eval_reward": total / max(n, 1.0), "eval_words": length / max(n, 1.0),
            **({"eval_cost": cost / max(n, 1.0)} if roles.constraint else {})}
