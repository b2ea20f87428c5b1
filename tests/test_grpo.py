"""The critic-free RL stage on tiny models: a reward for one word is learned by every estimator, no
reference is loaded when the KL is off, resume equals uninterrupted, dynamic sampling replaces
signal-free groups, the loss's pieces add up to the aggregations, and bad settings fail clearly.
(The estimators, clip-higher and the aggregations themselves: tests/test_grpo_math.py.)"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignkit.cli import main
from alignkit.config import GRPOConfig, load_config
from alignkit.errors import ConfigError
from alignkit.losses.grpo import aggregate, loss_denominator, loss_sum
from alignkit.rl.group import overlong_penalty
from alignkit.rl.rollout import Rollout, concat_rollouts
from alignkit.rl.group_rollout import whiten_across
from alignkit.stages.grpo import run_grpo
from alignkit.rl.advantages import whiten

PEAR = [{"fn": "regex", "pattern": r"\bpear\b"}]


def constant_for_flagged(prompts, responses, rows):
    """A reward function of the tests' own (module:function): 0.5 for every response to a row marked
    'flat' (such groups carry no signal), else whether the response says 'pear'."""
    return [0.5 if row.get("flat") else float("pear" in r.split()) for r, row in zip(responses, rows)]


def grpo(model_dir, prompts, out, *overrides, rewards=PEAR):
    args = [f"model.path={model_dir}", f"rollout.prompts_path={prompts}", f"output_dir={out}", "log.progress=false",
            "rollout.max_new_tokens=8", "train.batch_size=8", "group.n=8", f"rewards={json.dumps(rewards)}",
            *overrides]
    return run_grpo(load_config(GRPOConfig, None, args))


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# Dr. GRPO and REINFORCE++ learn the word too (make test-slow); their advantages have hand-derived
# tests in test_grpo_math.py, and grpo and rloo keep the learning check in the default suite.
@pytest.mark.parametrize("advantage", ["grpo", pytest.param("dr_grpo", marks=pytest.mark.slow), "rloo",
                                       pytest.param("reinforce_pp", marks=pytest.mark.slow)])
def test_each_estimator_learns_a_rewarded_word(fruit_policy, prompts_file, tmp_path, advantage):
    """Reward 1 when a response says 'pear' (the SFT policy says it in about a quarter of its six-word
    answers): within 30 generations of 8 prompts x 8 responses the share rises from under 0.35 (the
    first generation's) to above 0.8 (the last five's), for every estimator (dr_grpo with its constant aggregation)."""
    out = tmp_path / advantage
    lr = "optim.lr=3e-3" if advantage != "dr_grpo" else "optim.lr=1e-2"  # its loss is divided by the max length
    grpo(fruit_policy, prompts_file, out, f"group.advantage={advantage}", "train.max_steps=30", lr,
         "optim.schedule=constant")
    rows = metrics(out)
    first, last = rows[0]["reward"], sum(r["reward"] for r in rows[-5:]) / 5
    assert first < 0.35 and last > 0.8, (first, last)


def test_the_kl_term_starts_at_zero_and_holds_the_policy_back(fruit_policy, prompts_file, tmp_path, monkeypatch):
    """With kl.coef > 0 the reference (a frozen copy) equals the policy at the start: KL 0 in the first
    step. Two updates per generation: the first of each sees ratio 1, so nothing is clipped in it.
    A larger coefficient ends with a smaller KL. With kl.coef 0 no reference is loaded at all."""
    finals = {}
    for coef in (0.02, 1.0):
        out = tmp_path / f"kl{coef}"
        grpo(fruit_policy, prompts_file, out, f"kl.coef={coef}", "train.max_steps=24", "optim.lr=3e-3",
             "group.epochs=2", "optim.schedule=constant", "group.clip_low=0.1", "group.clip_high=0.1")
        rows = metrics(out)
        assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6)
        for row in rows[::2]:  # the first update of each generation
            assert row["clip_low_fraction"] == 0.0 and row["clip_high_fraction"] == 0.0
        finals[coef] = sum(r["kl"] for r in rows[-4:]) / 4
    assert finals[0.02] > 2 * finals[1.0], finals

    import alignkit.stages.grpo as stage

    def refuse(*args, **kwargs):
        raise AssertionError("a reference model was loaded with kl.coef=0")

    out = tmp_path / "in-reward"  # the KL spent in the reward is logged too
    grpo(fruit_policy, prompts_file, out, "train.max_steps=2", "kl.coef=0.1", "kl.mode=reward")
    assert all(r["kl"] == pytest.approx(0.0, abs=1e-5) for r in metrics(out)[:1]) and "kl" in metrics(out)[1]

    monkeypatch.setattr(stage.engine, "load_frozen", refuse)
    grpo(fruit_policy, prompts_file, tmp_path / "nokl", "train.max_steps=1")
    assert "kl" not in metrics(tmp_path / "nokl")[0]


def test_resume_equals_uninterrupted(tiny_dir, prompts_file, tmp_path):
    """6 steps, 2 per generation (2 minibatches), a checkpoint every 2; delete what came after step 2
    and resume: identical weights and metrics. Sampling and prompt order come back from the
    checkpoint; the step number alone locates the generation and minibatch."""
    args = ["train.max_steps=6", "group.minibatches=2", "checkpoint.save_every=2", "checkpoint.keep_last=5",
            "optim.lr=1e-3", "kl.coef=0.1", "group.advantage=rloo"]
    out = tmp_path / "run"
    straight = load_file(str(grpo(tiny_dir, prompts_file, out, *args) / "model.safetensors"))
    straight_rows = metrics(out)
    for name in ("model", "checkpoints/step-000004", "checkpoints/step-000006"):
        shutil.rmtree(out / name, ignore_errors=True)
    resumed = load_file(str(grpo(tiny_dir, prompts_file, out, *args, "resume=true") / "model.safetensors"))
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    drop = ("time", "gen_s", "prep_s", "gen_tokens_per_s", "train_tokens_per_s", "responses_per_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows] == \
        [{k: v for k, v in r.items() if k not in drop} for r in straight_rows]


def test_dynamic_sampling_replaces_groups_without_signal(fruit_policy, tmp_path):
    """Half the prompts are marked 'flat' (every response gets 0.5: no signal). Without dynamic
    sampling those groups (about half of a batch, and pear-less ones) train for nothing; with it,
    further prompts are sampled and the share of signal-free groups trained on falls below the
    share sampled, and to a quarter at most (20 prompts, half flat: few fresh ones to draw)."""
    from conftest import WORDS, write_jsonl

    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"Name some fruit for the {w}.", "flat": i % 2 == 0}
                                                       for i, w in enumerate(WORDS)])
    rewards = [{"fn": "test_grpo:constant_for_flagged"}]
    grpo(fruit_policy, prompts, tmp_path / "plain", "train.max_steps=3", rewards=rewards)
    plain = metrics(tmp_path / "plain")
    assert sum(r["zero_signal_share"] for r in plain) / 3 > 0.4 and "sampling_rounds" not in plain[0]
    grpo(fruit_policy, prompts, tmp_path / "dyn", "train.max_steps=3", "group.dynamic_sampling=true",
         "group.max_sampling_rounds=4", rewards=rewards)
    dyn = metrics(tmp_path / "dyn")
    assert all(r["sampling_rounds"] >= 1 for r in dyn)
    assert all(r["zero_signal_kept_share"] < r["zero_signal_share"] for r in dyn), dyn
    assert all(r["zero_signal_kept_share"] <= 0.25 for r in dyn), dyn


def test_logged_figures_and_the_held_out_reward_and_best_policy(fruit_policy, prompts_file, tmp_path):
    """Every row carries the reward per function, its group spread, the share of signal-free groups,
    entropy, clip fractions, length and throughput; the held-out reward is written at eval_every
    and the best policy kept with its record."""
    out = tmp_path / "run"
    rewards = PEAR + [{"fn": "length", "max_words": 3, "per_word": 0.1, "weight": 0.5}]
    grpo(fruit_policy, prompts_file, out, "train.max_steps=4", "train.eval_every=2",
         f"rollout.eval_prompts_path={prompts_file}", "rollout.eval_samples=8", "keep_best=true",
         "rollout.no_eos_penalty=0.5", rewards=rewards)
    rows = metrics(out)
    train = [r for r in rows if "reward" in r]
    for key in ("reward/regex", "reward/length", "reward_group_std/regex", "zero_signal_share", "entropy",
                "clip_low_fraction", "clip_high_fraction", "response_length", "gen_tokens_per_s",
                "train_tokens_per_s", "reward/overlong_penalty"):
        assert all(key in r for r in train), key
    for r in train:  # the total is the weighted sum of the parts
        assert r["reward"] == pytest.approx(r["reward/regex"] + 0.5 * r["reward/length"] + r["reward/overlong_penalty"])
    evals = [r for r in rows if "eval_reward" in r]
    assert [r["step"] for r in evals] == [0, 2, 4] and all("eval_reward/regex" in r for r in evals)
    record = json.loads((out / "best" / "best_eval_reward.json").read_text())
    assert record["eval_reward"] == max(r["eval_reward"] for r in evals)


def test_the_kl_term_stays_finite_where_a_pad_tokens_log_prob_underflows():
    """Past a response's end the reference log-prob is 0 and the policy's may be -1000 (a pad token
    it never says): k3 = exp(ref - logp) - 1 - (ref - logp) would overflow there, and inf x 0 is NaN.
    The loss masks the policy's log-probs first: finite, with a finite gradient."""
    from types import SimpleNamespace

    from alignkit.rl.group_rollout import Generation
    from alignkit.stages.grpo import policy_loss

    cfg = load_config(GRPOConfig, None, ["model.path=m", "rollout.prompts_path=p", 'rewards=[{fn: length}]',
                                         "kl.coef=0.1"])
    logits = torch.zeros(1, 4, 5, requires_grad=True)  # width 3 (+1): positions 0-2 predict the response
    shifted = logits + torch.tensor([0.0, 0.0, 0.0, 0.0, -1000.0])  # token 4, the pad, is unthinkable

    def model(**kwargs):
        return SimpleNamespace(logits=shifted)

    roll = Rollout(torch.tensor([[1, 2, 3, 4]]), torch.tensor([[1, 1, 1, 0]]), 1, torch.tensor([[1, 1, 0]]),
                   torch.tensor([True]))
    ref = torch.tensor([[-math.log(4), -math.log(4), 0.0]])  # the policy's own on the two real tokens: KL 0
    gen = Generation(roll, torch.tensor([1.0]), None, ref)
    loss, sums = policy_loss(cfg, model, gen, "token_mean")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all() and sums["kl"] == pytest.approx(0.0, abs=1e-6)


def test_loss_pieces_add_up_to_each_aggregation():
    """Two micro-batches' loss_sum over the whole batch's loss_denominator equals `aggregate` on the
    whole batch, for every aggregation (what makes any split into micro-batches and processes
    train alike)."""
    g = torch.Generator().manual_seed(0)
    per_token = torch.randn(6, 5, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0],
                         [1, 1, 0, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    for how in ("sequence_mean", "token_mean", "constant"):
        parts = loss_sum(per_token[:2], mask[:2], how) + loss_sum(per_token[2:], mask[2:], how)
        whole = aggregate(per_token, mask, how, constant=5)
        assert float(parts / loss_denominator(how, 6, float(mask.sum()), 5)) == pytest.approx(float(whole))


def test_overlong_penalty_hard_and_soft():
    """max 10, penalty 1. Without a buffer only the response that never ended (length 10) pays 1.
    Buffer 4: the ramp starts after 6 tokens: lengths 5, 6, 8, 10 (ended) pay 0, 0, 0.5, 1; the
    unended one 1."""
    lengths = torch.tensor([5, 6, 8, 10, 10])
    ended = torch.tensor([True, True, True, True, False])
    assert overlong_penalty(lengths, ended, 10, 0, 1.0).tolist() == [0, 0, 0, 0, 1]
    assert overlong_penalty(lengths, ended, 10, 4, 1.0).tolist() == [0, 0, 0.5, 1, 1]


def test_concatenated_rollouts_pad_prompts_on_the_left():
    """Prompt widths 2 and 3: the first rollout's rows gain one pad column on the left, masked."""
    a = Rollout(torch.tensor([[5, 6, 7, 8]]), torch.ones(1, 4, dtype=torch.long), 2, torch.ones(1, 2, dtype=torch.long),
                torch.tensor([True]))
    b = Rollout(torch.tensor([[0, 4, 5, 9, 9]]), torch.tensor([[0, 1, 1, 1, 1]]), 3, torch.ones(1, 2, dtype=torch.long),
                torch.tensor([False]))
    c = concat_rollouts([a, b], pad_id=0)
    assert c.prompt_width == 3
    assert c.sequences.tolist() == [[0, 5, 6, 7, 8], [0, 4, 5, 9, 9]]
    assert c.attention_mask.tolist() == [[0, 1, 1, 1, 1], [0, 1, 1, 1, 1]]


def test_whitening_across_processes_equals_whiten_on_one():
    """One process (reduce returns its scalars): whiten_across is rl/advantages.whiten (the same
    unbiased variance)."""
    x = torch.tensor([[1.0, 2.0, 0.0], [4.0, -1.0, 3.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert torch.allclose(whiten_across(lambda *v: list(v), x, mask), whiten(x, mask), atol=1e-6)


def test_cli_help_and_bad_settings(fruit_policy, prompts_file, tmp_path, capsys):
    """`alignkit grpo --help` lists the keys; no reward, a group of 1, a checkpoint interval that cuts
    a generation, and an unknown reward function are clear errors."""
    assert main(["grpo", "--help"]) == 0
    assert "group.advantage" in capsys.readouterr().out
    base = [f"model.path={fruit_policy}", f"rollout.prompts_path={prompts_file}", f"output_dir={tmp_path / 'x'}"]
    cases = [([], "no reward"), ([f"rewards={json.dumps(PEAR)}", "group.n=1"], "group.n must be at least 2"),
             ([f"rewards={json.dumps(PEAR)}", "group.minibatches=2", "checkpoint.save_every=3"], "multiple of the 2"),
             ([f"rewards={json.dumps(PEAR)}", "train.batch_size=3", "group.n=3", "group.minibatches=2"],
              "must divide into")]
    for extra, message in cases:
        with pytest.raises(ConfigError, match=message):
            load_config(GRPOConfig, None, base + extra)
    with pytest.raises(ConfigError, match="overlong_buffer ramps in rollout.no_eos_penalty"):
        load_config(GRPOConfig, None, base + [f"rewards={json.dumps(PEAR)}", "group.overlong_buffer=2"])
    with pytest.raises(ConfigError, match="would be logged as the stage's own reward_model"):
        run_grpo(load_config(GRPOConfig, None, base + ['rewards=[{fn: length, name: reward_model}]']))
    with pytest.raises(ConfigError, match="did you mean 'regex'"):
        run_grpo(load_config(GRPOConfig, None, base + ['rewards=[{fn: regx}]', "train.max_steps=1"]))
