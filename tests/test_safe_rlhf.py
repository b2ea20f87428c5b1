"""Safe RLHF (rl/safe.py, ppo safety section): the Lagrange multiplier's update, the penalised reward,
and PPO under a cost constraint on tiny models."""

from __future__ import annotations

import json

import pytest
import torch

from alignkit.config import PPOConfig, load_config
from alignkit.errors import ConfigError
from alignkit.rl.safe import CostConstraint, lagrange_update, penalized_reward
from alignkit.stages.ppo import run_ppo

TARGET = "pear"


def pear_share(prompts, responses):
    return torch.tensor([r.split().count(TARGET) / 6 for r in responses])


def test_multiplier_rises_while_violated_and_falls_to_zero_when_slack():
    """lr 0.5, limit 0.2. Costs 0.6, 0.6: violation 0.4 each, lambda 1.0 -> 1.2 -> 1.4. Then cost 0.0:
    slack 0.2, lambda 1.4 -> 1.3; cost -3.0 (slack 3.2): 1.3 - 1.6 < 0, so lambda is 0 (projected)."""
    lam = 1.0
    seen = []
    for cost in (0.6, 0.6, 0.0, -3.0, -3.0):
        lam = lagrange_update(lam, cost, 0.2, 0.5)
        seen.append(lam)
    assert seen == pytest.approx([1.2, 1.4, 1.3, 0.0, 0.0])
    assert lagrange_update(0.0, 0.2, 0.2, 0.5) == 0.0  # on the boundary: no step


def test_penalised_reward_against_hand_values():
    """R (1, 0), C (0.5, 2), lambda 2: R - 2C = (0, -4); divided by 1 + 2: (0, -4/3)."""
    r, c = torch.tensor([1.0, 0.0]), torch.tensor([0.5, 2.0])
    assert penalized_reward(r, c, 2.0, normalize=False).tolist() == pytest.approx([0.0, -4.0])
    assert penalized_reward(r, c, 2.0).tolist() == pytest.approx([0.0, -4 / 3])
    assert penalized_reward(r, c, 0.0).tolist() == pytest.approx([1.0, 0.0])  # lambda 0: the reward itself


def test_constraint_keeps_the_call_apart_and_fixed_does_not_move():
    c = CostConstraint(lambda p, r: torch.tensor([0.5, 2.0]), limit=0.0, lam=2.0, lr=0.1)
    scored = c.scorer(lambda p, r, rows: torch.tensor([1.0, 0.0]))([[]] * 2, ["a", "b"], [{}, {}])
    assert scored.tolist() == pytest.approx([0.0, -4 / 3])
    assert c.last_rewards.tolist() == [1.0, 0.0] and c.last_costs.tolist() == [0.5, 2.0]
    c.update(1.25)
    assert c.lam == pytest.approx(2.125)
    fixed = CostConstraint(lambda p, r: torch.zeros(1), limit=0.0, lam=2.0, lr=0.1, learn=False)
    fixed.update(5.0)
    assert fixed.lam == 2.0


def test_unsafe_only_counts_only_what_the_cost_model_calls_unsafe():
    """C (-3, 2), lambda 1, R (1, 1): with unsafe_only the costs are (0, 2), the penalised rewards
    (1 - 0, 1 - 2) / 2 = (0.5, -0.5), and the mean cost the multiplier sees is 1, not -0.5: a very
    safe answer no longer pays for an unsafe one."""
    c = CostConstraint(lambda p, r: torch.tensor([-3.0, 2.0]), limit=0.0, lam=1.0, lr=0.1, unsafe_only=True)
    scored = c.scorer(lambda p, r, rows: torch.tensor([1.0, 1.0]))([[]] * 2, ["a", "b"], [{}, {}])
    assert scored.tolist() == pytest.approx([0.5, -0.5])
    assert c.last_costs.tolist() == [0.0, 2.0] and float(c.last_costs.mean()) == 1.0
    raw = CostConstraint(lambda p, r: torch.tensor([-3.0, 2.0]), limit=0.0, lam=1.0, lr=0.1)
    raw.scorer(lambda p, r, rows: torch.tensor([1.0, 1.0]))([[]] * 2, ["a", "b"], [{}, {}])
    assert float(raw.last_costs.mean()) == -0.5


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def safe_ppo(policy, prompts, out, *overrides, cost_fn=pear_share):
    cfg = load_config(PPOConfig, None, [f"model.path={policy}", f"rollout.prompts_path={prompts}", f"output_dir={out}",
                                       "log.progress=false", "rollout.max_new_tokens=8", "train.batch_size=16",
                                       "ppo.minibatches=2", "value_model=policy_head", "rollout.no_eos_penalty=0",
                                       "optim.lr=3e-3", "optim.schedule=constant", "kl.coef=0.01", *overrides])
    return run_ppo(cfg, reward_fn=pear_share, cost_fn=cost_fn)


def test_logged_multiplier_follows_the_rule_from_the_logged_cost(fruit_policy, prompts_file, tmp_path):
    """Four iterations, limit 0.05 and lambda from 0.5: each logged lambda is the one the rule gives
    from the lambda and cost logged the iteration before; fixed, lambda never moves."""
    out = tmp_path / "rule"
    safe_ppo(fruit_policy, prompts_file, out, "train.max_steps=4", "safety.cost_limit=0.05", "safety.lambda_init=0.5",
             "safety.lambda_lr=1.0")
    logged = rows(out)
    assert len(logged) == 4 and logged[0]["lambda"] == 0.5
    for before, after in zip(logged, logged[1:]):
        assert after["lambda"] == pytest.approx(max(0.0, before["lambda"] + 1.0 * (before["cost"] - 0.05)), abs=1e-6)
    fixed = tmp_path / "fixed"
    safe_ppo(fruit_policy, prompts_file, fixed, "train.max_steps=2", "safety.multiplier=fixed", "safety.lambda_init=0.5")
    assert [r["lambda"] for r in rows(fixed)] == [0.5, 0.5]


def test_lagrangian_ppo_holds_the_cost_limit_the_reward_alone_breaks(fruit_policy, prompts_file, tmp_path):
    """Reward and cost are the same signal (the share of 'pear' in a response), so the constraint is
    all that holds the policy back. Unconstrained (lambda fixed at 0), PPO drives the share above 0.5
    (the reward test in test_ppo.py); with the cost limited to 0.1 the multiplier rises while the
    cost is over it and the last iterations' cost stays near the limit. Every logged lambda follows
    the update rule from the cost logged in the iteration before."""
    free, safe = tmp_path / "free", tmp_path / "safe"
    safe_ppo(fruit_policy, prompts_file, free, "train.max_steps=25", "safety.multiplier=fixed", "safety.lambda_init=0")
    safe_ppo(fruit_policy, prompts_file, safe, "train.max_steps=25", "safety.cost_limit=0.1", "safety.lambda_init=0",
             "safety.lambda_lr=2.0")
    tail = lambda rs, k: sum(r[k] for r in rs[-5:]) / 5  # noqa: E731
    unconstrained, constrained = rows(free), rows(safe)
    assert tail(unconstrained, "cost") > 0.4 and all(r["lambda"] == 0 for r in unconstrained)
    assert tail(constrained, "cost") < 0.2 < tail(unconstrained, "cost") - 0.2
    assert max(r["lambda"] for r in constrained) > 0
    for before, after in zip(constrained, constrained[1:]):
        assert after["lambda"] == pytest.approx(max(0.0, before["lambda"] + 2.0 * (before["cost"] - 0.1)), abs=1e-6)
        assert after["cost_slack"] == pytest.approx(0.1 - after["cost"], abs=1e-6)
    assert {"reward", "cost", "lambda", "cost_slack", "penalized_score"} <= set(constrained[-1])


def test_cost_model_and_held_out_cost(tiny_dir, prompts_file, reward_dir, tmp_path):
    """A cost model directory in the config (the tiny random one stands in): the held-out figures carry
    eval_cost beside eval_reward, and keep_best saves only a policy within the limit."""
    out = tmp_path / "cm"
    cfg = load_config(PPOConfig, None, [f"model.path={tiny_dir}", f"rollout.prompts_path={prompts_file}",
                                       f"rollout.eval_prompts_path={prompts_file}", "rollout.eval_samples=8",
                                       f"output_dir={out}", "log.progress=false", "rollout.max_new_tokens=4",
                                       "train.batch_size=8", "ppo.minibatches=1", "train.max_steps=2",
                                       "train.eval_every=1", f"safety.cost_model={reward_dir}",
                                       "safety.cost_limit=-100", "keep_best=true", "value_model=policy_head"])
    run_ppo(cfg, reward_fn=pear_share)
    logged = rows(out)
    assert all("eval_cost" in r for r in logged if "eval_reward" in r)
    assert "best_eval_reward" not in logged[-1]  # nothing within a limit of -100: no better policy saved
    with pytest.raises(ConfigError, match="safety.lambda_lr"):
        load_config(PPOConfig, None, [f"model.path={tiny_dir}", "rollout.prompts_path=p", "safety.lambda_lr=-1"])


def test_grpo_under_a_cost_constraint_logs_the_rule_and_resumes_exactly(tiny_dir, prompts_file, reward_dir, tmp_path):
    """GRPO with a cost model (the tiny random one stands in) and a limit it cannot meet: each logged
    lambda follows the rule from the cost logged with it (reward/cost, the generation's first samples),
    and a run resumed from its step-2 checkpoint (lambda restored from it) ends with the same weights and
    the same lambdas as one never stopped."""
    import shutil

    from safetensors.torch import load_file

    from alignkit.config import GRPOConfig
    from alignkit.stages.grpo import run_grpo

    args = [f"model.path={tiny_dir}", f"rollout.prompts_path={prompts_file}", "log.progress=false",
            "rollout.max_new_tokens=6", "train.batch_size=4", "group.n=4", "train.max_steps=4", "checkpoint.save_every=2",
            "checkpoint.keep_last=5", "optim.lr=1e-3", "group.advantage=rloo", "rewards=[{fn: length, max_words: 4}]",
            f"safety.cost_model={reward_dir}", "safety.cost_limit=-100", "safety.lambda_init=0.5", "safety.lambda_lr=0.01"]
    out = tmp_path / "run"
    straight = load_file(str(run_grpo(load_config(GRPOConfig, None, [*args, f"output_dir={out}"])) / "model.safetensors"))
    logged = rows(out)
    assert [r["lambda"] for r in logged][0] == 0.5
    for before, after in zip(logged, logged[1:]):
        assert after["lambda"] == pytest.approx(before["lambda"] + 0.01 * (before["reward/cost"] + 100), abs=1e-6)
    for name in ("model", "checkpoints/step-000004"):
        shutil.rmtree(out / name, ignore_errors=True)
    resumed = load_file(str(run_grpo(load_config(GRPOConfig, None, [*args, f"output_dir={out}", "resume=true"]))
                            / "model.safetensors"))
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert [r["lambda"] for r in rows(out)] == [r["lambda"] for r in logged]
