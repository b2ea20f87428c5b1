"""The PPO stage on tiny models: the ratio starts at 1, a reward for one token is learned with the KL
penalty active (and KL grows as its coefficient shrinks), resume equals uninterrupted, LoRA shares
the reference's weights, and bad input fails clearly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignkit.cli import main
from alignkit.config import PPOConfig, load_config
from alignkit.errors import ConfigError, DataError
from alignkit.rl.experience import final_scores
from alignkit.stages.ppo import run_ppo

from conftest import write_jsonl

TARGET = "pear"  # one token (" pear") in the tiny tokenizer


def target_reward(prompts, responses):
    """Share of the response's words (6 in the demonstrations) that are the target word."""
    return torch.tensor([r.split().count(TARGET) / 6 for r in responses])


def ppo(model_dir, prompts, out, *overrides, reward_fn=None, reward_dir=None):
    args = [f"model.path={model_dir}", f"rollout.prompts_path={prompts}", f"output_dir={out}", "log.progress=false",
            "rollout.max_new_tokens=8", "train.batch_size=16", "ppo.minibatches=2", *overrides]
    if reward_dir is not None:
        args.append(f"reward_model={reward_dir}")
    return run_ppo(load_config(PPOConfig, None, args), reward_fn=reward_fn)


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_final_scores_clip_then_penalise_responses_without_eos():
    """raw (3, -0.5, 2), clip 1 -> (1, -0.5, 1); the second and third never ended, penalty 0.5
    -> (1, -1, 0.5). No clip and no penalty leave the scores as they are."""
    raw, ended = torch.tensor([3.0, -0.5, 2.0]), torch.tensor([True, False, False])
    assert torch.allclose(final_scores(raw, ended, 0.5, 1.0), torch.tensor([1.0, -1.0, 0.5]))
    assert torch.equal(final_scores(raw, ended, 0.0, 0.0), raw)


def test_the_ratio_starts_at_exactly_one(tiny_dir, prompts_file, reward_dir, tmp_path):
    """Dropout is switched off and the rollout's log-probs come from the training forward pass, so
    the first minibatch of an iteration sees ratio 1: no clipping and approx-KL 0 on it. With one
    minibatch, one epoch and lr 0 every reported figure is that first minibatch's."""
    out = tmp_path / "one"
    ppo(tiny_dir, prompts_file, out, "train.max_steps=2", "ppo.epochs=1", "ppo.minibatches=1", "optim.lr=1e-12",
        "peft.method=lora", "peft.lora_dropout=0.5", reward_dir=reward_dir)
    for row in metrics(out):
        assert row["approx_kl"] == pytest.approx(0.0, abs=1e-7)
        assert row["clip_fraction"] == 0.0
        assert row["kl"] == pytest.approx(0.0, abs=1e-6)  # the policy has not moved from the reference


def test_policy_learns_a_rewarded_token_and_kl_grows_as_the_coefficient_shrinks(fruit_policy, prompts_file,
                                                                                  tmp_path):
    """A reward for the word 'pear' (about 5% of the SFT policy's words): with the KL penalty active
    at 0.01 the policy learns to say it (mean reward from ~0.05 to above 0.5), at 0.3 the penalty
    holds it near the reference; the measured KL is larger for the smaller coefficient."""
    common = ["train.max_steps=25", "optim.lr=3e-3", "value_model=policy_head", "rollout.no_eos_penalty=0",
              "optim.schedule=constant"]
    finals = {}
    for coef in (0.01, 0.3):
        out = tmp_path / f"kl{coef}"
        ppo(fruit_policy, prompts_file, out, *common, f"kl.coef={coef}", reward_fn=target_reward)
        rows = metrics(out)
        finals[coef] = {"first": sum(r["reward"] for r in rows[:3]) / 3, "last": sum(r["reward"] for r in rows[-3:]) / 3,
                        "kl": sum(r["kl"] for r in rows[-3:]) / 3}
    low, high = finals[0.01], finals[0.3]
    assert low["first"] < 0.15 and low["last"] > 0.5, finals
    assert low["kl"] > 2 * high["kl"] > 0, finals


def test_resume_equals_uninterrupted(tiny_dir, prompts_file, reward_dir, tmp_path):
    """4 iterations with a checkpoint at 2; delete what came after and resume: identical policy and
    critic weights, and the metrics read as one run. Sampling, prompt order and the KL controller's
    state all come back from the checkpoint."""
    args = ["train.max_steps=4", "checkpoint.save_every=2", "checkpoint.keep_last=5", "optim.lr=1e-3",
            "kl.target=0.5", "kl.horizon=100"]
    out = tmp_path / "run"
    straight = load_file(str(ppo(tiny_dir, prompts_file, out, *args, reward_dir=reward_dir) / "model.safetensors"))
    straight_rows = metrics(out)
    for name in ("model", "checkpoints/step-000003", "checkpoints/step-000004"):
        shutil.rmtree(out / name, ignore_errors=True)
    resumed = load_file(str(ppo(tiny_dir, prompts_file, out, *args, "resume=true", reward_dir=reward_dir)
                            / "model.safetensors"))
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["kl_coef"] for r in rows] == [r["kl_coef"] for r in straight_rows]
    assert rows[-1]["reward"] == straight_rows[-1]["reward"]
    ckpt = load_file(str(out / "checkpoints" / "step-000004" / "model.safetensors"))
    assert any(k.startswith("critic.") for k in ckpt)  # the critic is part of the saved state


def test_lora_policy_uses_itself_without_adapters_as_reference(tiny_dir, prompts_file, reward_dir, tmp_path):
    """With LoRA there is no second copy of the policy: KL starts at 0, grows as the adapters train,
    and the saved policy is an adapter over the SFT model that loads with load_causal_lm."""
    from alignkit.models import load_causal_lm

    out = tmp_path / "lora"
    model_dir = ppo(tiny_dir, prompts_file, out, "train.max_steps=4", "optim.lr=1e-2", "peft.method=lora",
                    "peft.lora_r=4", "value_model=policy_head", reward_dir=reward_dir)
    rows = metrics(out)
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6) and rows[-1]["kl"] != 0.0
    assert (model_dir / "adapter_config.json").exists()
    load_causal_lm(model_dir)


def test_value_head_on_the_policy_and_ptx_and_early_stop(tiny_dir, prompts_file, train_file, reward_dir, tmp_path):
    """value_model=policy_head trains without a second backbone; PPO-ptx reports its SFT loss; a tiny
    approx-KL bound stops each iteration's 2 x 2 minibatches after the second: the first is measured
    before any update (ratio 1, approx-KL 0), the second after one (approx-KL > 0)."""
    out = tmp_path / "head"
    ppo(tiny_dir, prompts_file, out, "train.max_steps=3", "optim.lr=1e-2", "value_model=policy_head",
        "ppo.ptx_coef=0.5", f"ppo.ptx_path={train_file}", "ppo.ptx_batch_size=4", "ppo.target_approx_kl=1e-12",
        reward_dir=reward_dir)
    rows = metrics(out)
    assert all(r["ptx_loss"] > 0 for r in rows)
    assert [r["optimizer_steps"] for r in rows] == [2, 2, 2]


def test_held_out_reward_and_best_policy(tiny_dir, prompts_file, reward_dir, tmp_path):
    out = tmp_path / "best"
    ppo(tiny_dir, prompts_file, out, "train.max_steps=2", "train.eval_every=1", "keep_best=true",
        f"rollout.eval_prompts_path={prompts_file}", "rollout.eval_samples=8", reward_dir=reward_dir)
    rows = metrics(out)
    assert rows[0]["step"] == 0 and "eval_reward" in rows[0]
    assert all("eval_reward" in r for r in rows[1:])
    assert (out / "best" / "model.safetensors").exists() and (out / "curves.png").exists()
    record = json.loads((out / "best" / "best_eval_reward.json").read_text())
    assert record["eval_reward"] == max(r["eval_reward"] for r in rows)
    assert main(["plot", str(out), "--keys", "reward,kl,eval_reward", "--out", str(tmp_path / "rk.png")]) == 0
    assert (tmp_path / "rk.png").stat().st_size > 0
    assert main(["plot", str(out), "--keys", "rewrd"]) == 2  # unknown metric: an error, not an empty plot


def test_cli_and_bad_input(tiny_dir, prompts_file, reward_dir, tmp_path, capsys):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok"}, {"text": "no prompt"}])
    with pytest.raises(DataError, match=r"bad.jsonl, line 2: expected a non-empty string 'prompt'"):
        ppo(tiny_dir, bad, tmp_path / "bad", reward_dir=reward_dir)
    with pytest.raises(ConfigError, match="no reward: set reward_model"):
        ppo(tiny_dir, prompts_file, tmp_path / "none")
    with pytest.raises(ConfigError, match="must divide"):
        load_config(PPOConfig, None, ["model.path=x", "rollout.prompts_path=y", "train.batch_size=10",
                                      "ppo.minibatches=4"])
    with pytest.raises(ConfigError, match="keep_best needs .* train.eval_every > 0"):
        load_config(PPOConfig, None, ["model.path=x", "rollout.prompts_path=y", "keep_best=true",
                                      "rollout.eval_prompts_path=z"])
    with pytest.raises(ConfigError, match="did you mean 'kl.coef'"):
        load_config(PPOConfig, None, ["model.path=x", "rollout.prompts_path=y", "kl.coeff=0.1"])
    code = main(["ppo", f"model.path={tiny_dir}", f"rollout.prompts_path={prompts_file}", f"reward_model={reward_dir}",
                 f"output_dir={tmp_path / 'cli'}", "train.max_steps=1", "train.batch_size=8", "log.progress=false",
                 "rollout.max_new_tokens=4"])
    assert code == 0 and (tmp_path / "cli" / "model" / "config.json").exists()


@pytest.mark.slow  # make test-slow: CI's 15 minutes (see README, Development)
def test_two_processes_share_one_kl_controller_and_resume_exactly(tiny_dir, prompts_file, reward_dir, tmp_path):
    """DDP on CPU (gloo) through `accelerate launch`: 2 processes x 8 prompts make 16 episodes an
    iteration; the adaptive KL coefficient (every process updates it from the KL summed over both)
    is logged and checkpointed once; and a resume from iteration 1 (each process restoring its own
    random state) reaches the same weights as the uninterrupted run."""
    import subprocess
    import sys

    out = tmp_path / "ddp"
    args = [f"model.path={tiny_dir}", f"rollout.prompts_path={prompts_file}", f"reward_model={reward_dir}",
            f"output_dir={out}", "train.batch_size=8", "train.max_steps=2", "rollout.max_new_tokens=6",
            "kl.target=0.01", "kl.horizon=10", "optim.lr=1e-2", "checkpoint.save_every=1", "checkpoint.keep_last=3",
            "log.progress=false"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "alignkit", "ppo"]
    proc = subprocess.run(launch + args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = metrics(out)
    assert [r["episodes"] for r in rows] == [16, 32]
    assert rows[0]["kl_coef"] == 0.05 and rows[1]["kl_coef"] != 0.05  # the controller moved
    state = json.loads((out / "checkpoints" / "step-000002" / "state.json").read_text())
    assert state["extra"]["kl_coef"] != 0.05 and (out / "checkpoints" / "step-000002" / "rng-rank1.safetensors").exists()
    straight = load_file(str(out / "model" / "model.safetensors"))
    for name in ("model", "checkpoints/step-000002"):
        shutil.rmtree(out / name)
    proc = subprocess.run(launch + args + ["resume=true"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    resumed = load_file(str(out / "model" / "model.safetensors"))
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    assert metrics(out)[-1]["reward"] == rows[-1]["reward"]


def test_a_critic_from_a_reward_model_with_another_tokenizer_is_refused(tiny_dir, prompts_file, tmp_path):
    """The critic reads the policy's token ids, so starting it from a reward model with another
    vocabulary would give silent garbage; the stage says so and names the way out."""
    from alignkit.models import build_tiny_model, load_tokenizer
    from alignkit.models.reward import load_reward_backbone

    build_tiny_model(tmp_path / "other", ["zebra yak quokka " * 20] * 20, arch="llama", hidden=32, layers=1, heads=2)
    rm_dir = tmp_path / "rm"
    load_reward_backbone(tmp_path / "other").save_pretrained(rm_dir)
    load_tokenizer(tmp_path / "other").save_pretrained(rm_dir)
    with pytest.raises(ConfigError, match="tokenizer differs .* use value_model=policy_head"):
        ppo(tiny_dir, prompts_file, tmp_path / "run", reward_dir=rm_dir)


def test_placement_moves_the_rollout_to_a_frozen_model_elsewhere_and_checks_the_device():
    """placement.reference_device keeps the reference off the policy's device: its log-probs are
    computed on the rollout moved there (to `meta` here, the one other device a CPU machine has),
    and a device name that is not one is refused when the config loads."""
    from alignkit.rl.rollout import Rollout
    from alignkit.rl.experience import moved

    roll = Rollout(torch.ones(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.long), 2,
                   torch.ones(2, 3, dtype=torch.long), torch.ones(2, dtype=torch.bool))
    assert moved(roll, torch.device("cpu")) is roll
    there = moved(roll, torch.device("meta"))
    assert {t.device.type for t in (there.sequences, there.attention_mask, there.response_mask)} == {"meta"}
    assert there.prompt_width == 2
    load_config(PPOConfig, None, ["model.path=m", "rollout.prompts_path=p", "placement.reference_device=cpu",
                                  "placement.reward_device=cuda:1"])
    with pytest.raises(ConfigError, match=r"placement.reward_device must be .* got 'gpu'"):
        load_config(PPOConfig, None, ["model.path=m", "rollout.prompts_path=p", "placement.reward_device=gpu"])


def test_an_ensemble_of_one_model_twice_equals_the_model_and_another_member_changes_the_reward(
        tiny_dir, prompts_file, reward_dir, tmp_path):
    """The ensemble's reward is the members' mean minus coef x their spread: two copies of one reward
    model have no spread and the same mean, so the run is the single model's, iteration for iteration;
    a member with another score head moves the reward (with coef 0; with coef 1 two members give the
    lower of their two rewards, mean - |a - b| / 2, here the first model's own)."""
    args = ["train.max_steps=2", "optim.lr=1e-3"]
    ppo(tiny_dir, prompts_file, tmp_path / "one", *args, reward_dir=reward_dir)
    ppo(tiny_dir, prompts_file, tmp_path / "two", *args, f"reward_ensemble=[{reward_dir}]",
        "reward_uncertainty_coef=2.0", reward_dir=reward_dir)
    assert [r["reward"] for r in metrics(tmp_path / "one")] == pytest.approx([r["reward"] for r in metrics(tmp_path / "two")],
                                                                              abs=1e-6)
    other = tmp_path / "other-rm"
    shutil.copytree(reward_dir, other)
    weights = load_file(str(other / "model.safetensors"))
    weights = {k: (v + 0.5 if k.startswith("score") else v) for k, v in weights.items()}
    from safetensors.torch import save_file

    save_file(weights, str(other / "model.safetensors"), metadata={"format": "pt"})
    ppo(tiny_dir, prompts_file, tmp_path / "mixed", *args, f"reward_ensemble=[{other}]", "reward_uncertainty_coef=0",
        reward_dir=reward_dir)
    assert metrics(tmp_path / "mixed")[0]["reward"] != pytest.approx(metrics(tmp_path / "one")[0]["reward"], abs=1e-4)


def test_the_adaptive_kl_coefficient_moves_the_right_way_in_the_stage(tiny_dir, prompts_file, reward_dir, tmp_path):
    """kl.coef 0.1, horizon 160, 16 episodes per iteration: each update multiplies the coefficient by
    1 +- 0.2 x 16 / 160 = 1.02 or 0.98 (Ziegler et al. 2019, the error clipped to +-0.2). The first
    iteration's KL is 0 (the policy is the reference): below any target, so 0.1 -> 0.098. After that,
    with a target of 1e-9 and the k3 estimator (never negative), any movement is above target:
    0.098 -> 0.09996; with a target of 1000 it keeps falling: 0.098 -> 0.09604."""
    common = ["train.max_steps=3", "optim.lr=1e-2", "kl.coef=0.1", "kl.horizon=160", "kl.estimator=k3"]
    for target, third in ((1e-9, 0.098 * 1.02), (1000.0, 0.098 * 0.98)):
        out = tmp_path / f"t{target}"
        ppo(tiny_dir, prompts_file, out, *common, f"kl.target={target}", reward_dir=reward_dir)
        rows = [r for r in metrics(out) if "kl_coef" in r]
        assert [r["kl_coef"] for r in rows] == pytest.approx([0.1, 0.098, third], rel=1e-9)
        assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-7) and rows[1]["kl"] > 0


def test_an_entropy_bonus_raises_the_policys_entropy(tiny_dir):
    """One PPO update on a fixed rollout, with and without ppo.entropy_coef = 5 (everything else
    equal, lr 1e-2): the bonus is subtracted from the loss, so the updated policy's mean entropy on
    the rollout's response tokens is higher than without it."""
    from alignkit.losses import entropy_from_logprobs
    from alignkit.models import load_causal_lm
    from alignkit.models.value import PolicyAndValue, disable_dropout, hidden_size
    from alignkit.rl.advantages import masked_mean
    from alignkit.rl.experience import Experience
    from alignkit.rl.rollout import Rollout, token_logprobs
    from alignkit.stages.ppo import ppo_update
    from alignkit.training import engine
    from alignkit.training.optim import build_optimizer
    from alignkit.training.run import make_accelerator

    g = torch.Generator().manual_seed(1)
    seq = torch.randint(3, 100, (8, 11), generator=g)
    mask = torch.ones(8, 6, dtype=torch.long)
    roll = Rollout(seq, torch.ones_like(seq), 5, mask, torch.ones(8, dtype=torch.bool))
    exp = Experience(old_logp=-4.0 - torch.rand(8, 6, generator=g), values=torch.zeros(8, 6),
                     advantages=torch.randn(8, 6, generator=g), returns=torch.zeros(8, 6))
    entropies = {}
    for coef in (0.0, 5.0):
        cfg = load_config(PPOConfig, None, ["model.path=m", "rollout.prompts_path=p", "train.batch_size=8", "ppo.epochs=1",
                                            "ppo.minibatches=1", "optim.lr=1e-2", f"ppo.entropy_coef={coef}"])
        torch.manual_seed(0)
        policy = load_causal_lm(tiny_dir)
        actor = PolicyAndValue(policy, None, hidden_size(policy))
        disable_dropout(actor)
        accelerator = make_accelerator("no")
        optimizer = build_optimizer(actor, cfg.optim)
        actor, optimizer = engine.prepare(accelerator, actor, optimizer, batch_size=8, grad_accum=1, max_grad_norm=1.0)
        ppo_update(cfg, accelerator, actor, optimizer, roll, exp, [], 0, 0)
        with torch.no_grad():
            logits, _ = actor(roll.sequences, roll.attention_mask, roll.prompt_width)
            _, logp_all = token_logprobs(logits, roll.responses, 1.0, with_all=True)
            entropies[coef] = float(masked_mean(entropy_from_logprobs(logp_all), mask))
    assert entropies[5.0] > entropies[0.0]


def plus_two(prompts, responses, rows):
    """A reward function of the tests' own: 2 for every response."""
    return [2.0] * len(responses)


def test_reward_functions_add_to_the_reward_model_by_weight(tiny_dir, prompts_file, reward_dir, tmp_path):
    """The same first iteration (same seed, same samples) scored by the reward model alone and with
    a function giving 2 to every response at weight 0.5: the mean reward differs by exactly 1."""
    alone, both = tmp_path / "alone", tmp_path / "both"
    ppo(tiny_dir, prompts_file, alone, "train.max_steps=1", reward_dir=reward_dir)
    ppo(tiny_dir, prompts_file, both, "train.max_steps=1", 'rewards=[{fn: "test_ppo:plus_two", weight: 0.5}]',
        reward_dir=reward_dir)
    assert metrics(both)[0]["reward"] == pytest.approx(metrics(alone)[0]["reward"] + 1.0, abs=1e-5)
