"""PPO's config: rollouts, the KL penalty, the PPO update, model placement, and the stage itself.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from alignkit.config.parts import (CheckpointConfig, LogConfig, ModelConfig, OptimConfig, PeftConfig, TrainConfig,
                                   check_non_negative, check_positive, check_training_parts)
from alignkit.errors import ConfigError


@dataclass
class RolloutConfig:
    prompts_path: str = ""
    """RL prompts: rows with a string 'prompt' (or 'messages' ending with a user turn), any file type SFT reads."""
    eval_prompts_path: str = ""
    """Held-out prompts, answered greedily and scored by the reward model every train.eval_every
    iterations (empty: no held-out reward)."""
    eval_samples: int = 256
    """Held-out prompts used (the first ones of the file)."""
    max_new_tokens: int = 32
    """Longest response sampled; a response that reaches it without EOS gets no_eos_penalty."""
    temperature: float = 1.0
    """Sampling temperature; log-probs are taken at the same temperature so the PPO ratio starts at 1."""
    top_p: float = 1.0
    """Nucleus sampling (1 disables). Below 1 the behaviour policy differs from the one trained; keep 1 for on-policy PPO."""
    top_k: int = 0
    """Sample among the k likeliest tokens (0 disables)."""
    no_eos_penalty: float = 1.0
    """Subtracted from the score of a response that never ends (it hit max_new_tokens without EOS);
    0 disables."""


@dataclass
class SafetyConstraintConfig:
    cost_model: str = ""
    """A cost model (`alignkit rm objective=cost`; its score > 0 means unsafe): empty turns the constraint off."""
    cost_limit: float = 0.0
    """The constraint: mean cost of the policy's samples <= this (Safe RLHF's d; 0: as many safe as unsafe
    by the cost model's boundary would be the edge, below 0 asks for safer)."""
    limit_from_start: bool = False
    """Set cost_limit to the mean cost of the first iteration's samples (the starting policy's): the
    policy may not become less safe than the SFT model it starts from. Useful when most prompts are
    harmless, so that the mean cost says little in absolute terms."""
    multiplier: Literal["lagrange", "fixed"] = "lagrange"
    """lagrange: lambda moves each iteration from the measured cost (safe RLHF); fixed: lambda stays at
    lambda_init (a fixed cost penalty, for comparison)."""
    lambda_init: float = 1.0
    """The multiplier's start value (the penalty's weight when fixed)."""
    lambda_lr: float = 0.1
    """The multiplier's step per unit of violation per iteration."""
    normalize: bool = True
    """Train on (reward - lambda cost) / (1 + lambda), so the reward's scale holds as lambda grows."""
    unsafe_only: bool = False
    """Use max(cost, 0) for the cost everywhere (the penalty, the constraint, the limit): only answers
    the cost model calls unsafe count, so answers to harmless requests that score as extra safe cannot
    offset an unsafe one in the mean, and the multiplier does not fall to 0 while most prompts are
    harmless."""


@dataclass
class KLConfig:
    coef: float = 0.05
    """KL penalty coefficient beta (its start value when adaptive): reward_t -= beta * KL_t."""
    estimator: Literal["k1", "k3"] = "k1"
    """Per-token KL estimate: k1 = logp - logp_ref, or k3 = (r - 1) - log r (never negative)."""
    target: float = 0.0
    """Adaptive coefficient (Ziegler et al. 2019): the KL per sequence to aim for; 0 keeps beta fixed."""
    horizon: int = 10000
    """Adaptive coefficient: episodes over which beta moves by up to +-20% toward the target."""


@dataclass
class PPOAlgoConfig:
    epochs: int = 2
    """PPO epochs over each rollout batch."""
    minibatches: int = 2
    """Optimizer steps per PPO epoch: the rollout batch is split into this many minibatches."""
    clip: float = 0.2
    """Policy ratio clip range epsilon (Schulman et al. 2017, eq. 7)."""
    value_clip: float = 0.2
    """Value clip range: a new value may move at most this far from the rollout's value."""
    vf_coef: float = 0.1
    """Weight of the value loss in the total loss."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus (0 disables)."""
    gamma: float = 1.0
    """Discount factor."""
    lam: float = 0.95
    """GAE lambda (Schulman et al. 2016)."""
    whiten_advantages: bool = True
    """Normalise advantages to mean 0, std 1 over the rollout batch's response tokens."""
    whiten_rewards: bool = False
    """Scale the per-token rewards to std 1 over the rollout batch (mean kept)."""
    reward_clip: float = 0.0
    """Clip reward-model scores to [-c, c] after the offset (0 disables)."""
    target_approx_kl: float = 0.0
    """Stop an iteration's remaining minibatches when a minibatch's approx-KL to the rollout policy
    exceeds this, measured in its forward pass (the step it was measured in is still taken); 0 disables."""
    ptx_coef: float = 0.0
    """Weight of the SFT loss on ptx_path mixed into each minibatch (PPO-ptx, Ouyang et al. 2022)."""
    ptx_path: str = ""
    """SFT data for PPO-ptx (any SFT format); required when ptx_coef > 0."""
    ptx_batch_size: int = 16
    """SFT samples per minibatch for PPO-ptx."""


@dataclass
class PlacementConfig:
    """Where PPO's frozen models live. The policy (and a critic trained with it) is the engine's: DDP
    copies it, ZeRO/FSDP shard it. The frozen ones stay out of the engine, whole on every process,
    in inference mode (no gradients, no optimizer state)."""

    reference_device: str = ""
    """Device of the frozen reference (full fine-tuning only; with LoRA the reference is the policy
    with its adapters off and costs nothing): "" for the policy's device, or "cpu" to keep it off the
    accelerator (frees its memory; its forward pass then runs on the CPU, in float32)."""
    reward_device: str = ""
    """Device of the reward model: "" for the policy's device, or "cpu"."""


def check_placement(where: str, placement: PlacementConfig) -> None:
    for key in ("reference_device", "reward_device"):
        device = getattr(placement, key)
        if device and not re.fullmatch(r"(cpu|cuda|xpu|mps|npu)(:\d+)?", device):
            raise ConfigError(f"{where}: placement.{key} must be empty (the policy's device) or a device such "
                              f"as cpu or cuda:1, got {device!r}")


@dataclass
class PPOConfig:
    """RLHF with PPO: the policy samples, the reward model scores, a KL penalty keeps it near the reference."""

    output_dir: str = "runs/ppo"
    """Run directory: config.yaml, metrics.jsonl, checkpoints/, model/ (the policy), best/ when kept."""
    seed: int = 0
    """Seed for prompt order, sampling, value head initialisation and dropout."""
    resume: bool = False
    """Continue from the newest complete checkpoint in output_dir/checkpoints."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The initial policy and the reference: the SFT model (a full model or a LoRA adapter directory)."""
    reward_model: str = ""
    """The reward model directory from `alignkit rm` (its reward_normalization.json offset is subtracted)."""
    rewards: list[dict[str, Any]] = field(default_factory=list)
    """Reward functions added to the reward model's score by weight (or the whole reward without one):
    [{fn: exact_match, weight: 1.0}, ...], as in `alignkit grpo`. A module:function entry runs your
    own code."""
    reward_model_weight: float = 1.0
    """The reward model's weight when reward functions are added to it."""
    reward_ensemble: list[str] = field(default_factory=list)
    """Further reward model directories: the reward is then the mean over all of them (reward_model
    first) minus reward_uncertainty_coef x their standard deviation, each with its own offset
    subtracted (an uncertainty-penalised ensemble against over-optimisation). The critic still starts
    from reward_model."""
    reward_uncertainty_coef: float = 1.0
    """With reward_ensemble: how many standard deviations of the members' disagreement to subtract."""
    reference_model: str = ""
    """The KL penalty's reference when it is not the initial policy: continuing PPO from a PPO policy
    (ranking rounds) keeps the SFT model as the anchor. Empty: model.path. Not with LoRA (there the
    reference is the policy with its adapters disabled)."""
    value_model: Literal["reward", "policy_head"] = "reward"
    """The critic: a copy of the reward model scoring every token (default), or a linear head on the
    policy's last hidden state (no second backbone; the value loss then also shapes the policy's trunk)."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """Prompts, sampling and the no-EOS penalty."""
    kl: KLConfig = field(default_factory=KLConfig)
    """The KL penalty and its controller."""
    safety: SafetyConstraintConfig = field(default_factory=SafetyConstraintConfig)
    """Safe RLHF: a cost model and a constraint on the mean cost, through a Lagrange multiplier."""
    ppo: PPOAlgoConfig = field(default_factory=PPOAlgoConfig)
    """PPO epochs, minibatches, clipping, GAE, loss weights, early stop, PPO-ptx."""
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    """Devices of the frozen reference and reward models (memory against speed)."""
    keep_best: bool = False
    """Save the policy with the best held-out reward to output_dir/best (needs rollout.eval_prompts_path)."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-5, warmup_steps=0))
    """Optimizer and learning-rate schedule; the schedule (warmup_steps included) counts iterations, so
    every minibatch of an iteration uses the same rate."""
    peft: PeftConfig = field(default_factory=PeftConfig)
    """Which policy weights train. With LoRA the reference is the policy with its adapters disabled."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(batch_size=64, eval_batch_size=128))
    """batch_size: prompts per device per iteration (the rollout batch); grad_accum: micro-batches per
    minibatch; max_steps: iterations (0: epochs over the prompts); eval_every: iterations."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpoint interval (iterations) and retention."""
    log: LogConfig = field(default_factory=lambda: LogConfig(every=1))
    """Metrics (every N iterations), progress bar and TensorBoard."""

    def validate(self, where: str) -> None:
        self.model.validate(where)
        if not self.rollout.prompts_path:
            raise ConfigError(f"{where}: rollout.prompts_path is required")
        check_training_parts(where, self)
        r, p = self.rollout, self.ppo
        check_positive(where, "rollout.max_new_tokens", r.max_new_tokens)
        check_placement(where, self.placement)
        check_positive(where, "rollout.temperature", r.temperature)
        check_positive(where, "rollout.eval_samples", r.eval_samples)
        if not 0.0 < r.top_p <= 1.0:
            raise ConfigError(f"{where}: rollout.top_p must be in (0, 1], got {r.top_p}")
        check_non_negative(where, "rollout.top_k", r.top_k)
        check_non_negative(where, "kl.coef", self.kl.coef)
        check_non_negative(where, "kl.target", self.kl.target)
        check_positive(where, "kl.horizon", self.kl.horizon)
        for key in ("epochs", "minibatches", "clip", "value_clip", "ptx_batch_size"):
            check_positive(where, f"ppo.{key}", getattr(p, key))
        for key in ("vf_coef", "entropy_coef", "reward_clip", "target_approx_kl", "ptx_coef"):
            check_non_negative(where, f"ppo.{key}", getattr(p, key))
        if not (0.0 <= p.gamma <= 1.0 and 0.0 <= p.lam <= 1.0):
            raise ConfigError(f"{where}: ppo.gamma and ppo.lam must be in [0, 1], got {p.gamma} and {p.lam}")
        if self.train.batch_size % (p.minibatches * self.train.grad_accum):
            raise ConfigError(f"{where}: train.batch_size ({self.train.batch_size}) must divide into ppo.minibatches "
                              f"({p.minibatches}) x train.grad_accum ({self.train.grad_accum}) equal parts")
        if p.ptx_coef > 0 and not p.ptx_path:
            raise ConfigError(f"{where}: ppo.ptx_coef > 0 needs ppo.ptx_path (SFT data)")
        if self.keep_best and not (r.eval_prompts_path and self.train.eval_every):
            raise ConfigError(f"{where}: keep_best needs rollout.eval_prompts_path (held-out prompts) and "
                              "train.eval_every > 0 (how often they are scored)")
        check_non_negative(where, "reward_uncertainty_coef", self.reward_uncertainty_coef)
        if not math.isfinite(self.reward_model_weight):
            raise ConfigError(f"{where}: reward_model_weight must be a finite number")
        if self.reward_ensemble and not self.reward_model:
            raise ConfigError(f"{where}: reward_ensemble needs reward_model (the first member, and the critic's start)")
        if self.reference_model and self.peft.method == "lora":
            raise ConfigError(f"{where}: reference_model with peft.method=lora: the reference is the policy with its "
                              "adapters disabled; leave reference_model empty, or train without LoRA")
        self.peft.validate(where, prefix_unsupported_in="PPO")
        check_non_negative(where, "safety.lambda_init", self.safety.lambda_init)
        check_non_negative(where, "safety.lambda_lr", self.safety.lambda_lr)
