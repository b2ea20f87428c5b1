"""The critic-free RL stage's config (`alignkit grpo`): groups of sampled responses per prompt, their
rewards from a reward model and/or reward functions, the estimator, the clipped loss, the KL term.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from alignkit.config.parts import (CheckpointConfig, LogConfig, ModelConfig, OptimConfig, PeftConfig, TrainConfig,
                                   check_non_negative, check_positive, check_training_parts)
from alignkit.config.ppo import PlacementConfig, RolloutConfig, SafetyConstraintConfig, check_placement
from alignkit.errors import ConfigError


@dataclass
class GroupConfig:
    n: int = 8
    """Responses sampled per prompt (the group), in one batched generate with the KV cache."""
    advantage: Literal["grpo", "dr_grpo", "rloo", "reinforce_pp"] = "grpo"
    """grpo: (r - group mean) / group std (Shao et al. 2024); dr_grpo: r - group mean (Liu et al.
    2025); rloo: r minus the mean of the other n - 1 (Ahmadian et al. 2024); reinforce_pp: REINFORCE++
    (Hu 2025), the KL in per-token rewards and the returns whitened over the whole batch."""
    aggregation: Literal["auto", "sequence_mean", "token_mean", "constant"] = "auto"
    """How per-token losses become one: sequence_mean (each response's mean, then over responses: GRPO
    as published), token_mean (over every token of the batch: DAPO), constant (the token sum divided
    by responses x rollout.max_new_tokens: Dr. GRPO). auto: constant for dr_grpo, else token_mean."""
    epochs: int = 1
    """Passes over each generation's responses (several updates per batch; 1 with minibatches=1 is
    fully on-policy and needs no second forward pass for the old log-probs)."""
    minibatches: int = 1
    """Optimizer steps per pass: a generation's responses, shuffled, split into this many parts (each
    response's advantage is fixed before the split, so a group may span minibatches)."""
    clip_low: float = 0.2
    """The ratio's lower bound is 1 - clip_low (for responses with a negative advantage)."""
    clip_high: float = 0.2
    """The ratio's upper bound is 1 + clip_high; above clip_low it lets unlikely tokens with a positive
    advantage grow (DAPO's clip-higher, 0.28 in the paper)."""
    dynamic_sampling: bool = False
    """Replace groups whose rewards are all equal (no signal) with groups of further prompts (DAPO),
    sampling again up to max_sampling_rounds times; a batch still short keeps the signal-free groups."""
    max_sampling_rounds: int = 3
    """With dynamic_sampling: further batches sampled per generation at most."""
    overlong_buffer: int = 0
    """DAPO's soft overlong punishment: a response longer than max_new_tokens - buffer loses
    rollout.no_eos_penalty x (its length - (max_new_tokens - buffer)) / buffer; 0 disables (a response
    that hits the limit without EOS still loses no_eos_penalty)."""
    share_prompt: bool = True
    """Run each prompt once per group, in generation and in the training forward pass, its keys and
    values shared by the group's n responses (the same results up to float rounding, less work by
    the prompt's share; off: each response with its own copy). Off by itself with prefix tuning or
    gradient checkpointing."""


@dataclass
class GroupKLConfig:
    coef: float = 0.0
    """beta. 0 (TRL's default): no KL term and no reference model loaded at all."""
    mode: Literal["loss", "reward"] = "loss"
    """loss: beta x k3 per token added to the loss (GRPO, eq. 4); reward: beta x k1 subtracted from the
    reward (summed over the response for the group estimators, per token for reinforce_pp, which
    always takes it in the reward)."""


@dataclass
class GRPOConfig:
    """Critic-free RL: n responses per prompt, rewards from programs and/or a reward model, group advantages."""

    output_dir: str = "runs/grpo"
    """Run directory: config.yaml, metrics.jsonl, checkpoints/, model/ (the policy), best/ when kept."""
    seed: int = 0
    """Seed for prompt order and sampling."""
    resume: bool = False
    """Continue from the newest complete checkpoint in output_dir/checkpoints."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The initial policy (and the KL reference): the SFT model, a full model or a LoRA adapter directory."""
    rewards: list[dict[str, Any]] = field(default_factory=list)
    """Reward functions combined by weight: [{fn: exact_match, weight: 1.0}, {fn: my_module:score}, ...];
    built in: exact_match, numeric, regex, length, refusal, oracle (the demo world's). Options beside
    fn and weight go to the function. A module:function entry imports and runs your own code."""
    reward_model: str = ""
    """A reward model directory from `alignkit rm` (its offset subtracted), scored beside the functions."""
    reward_model_weight: float = 1.0
    """The reward model's weight in the sum."""
    rollout: RolloutConfig = field(default_factory=lambda: RolloutConfig(no_eos_penalty=0.0))
    """Prompts (rows may carry fields the reward functions read, e.g. answer), held-out prompts,
    sampling, and the penalty for a response that hits max_new_tokens without EOS."""
    group: GroupConfig = field(default_factory=GroupConfig)
    """Group size, estimator, loss, updates per generation, dynamic sampling, overlong penalty."""
    kl: GroupKLConfig = field(default_factory=GroupKLConfig)
    """The KL term and where it goes."""
    safety: SafetyConstraintConfig = field(default_factory=SafetyConstraintConfig)
    """Safe RLHF: a cost model and a constraint on the mean cost of each generation's first samples,
    through a Lagrange multiplier (as in PPO; the cost is logged as the part reward/cost)."""
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    """Devices of the frozen reference and reward models."""
    keep_best: bool = False
    """Save the policy with the best held-out reward to output_dir/best (needs rollout.eval_prompts_path)."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-5, warmup_steps=0))
    """Optimizer and schedule; the schedule counts optimizer steps (group.epochs x group.minibatches
    per generation)."""
    peft: PeftConfig = field(default_factory=PeftConfig)
    """Which policy weights train. With LoRA the reference is the policy with its adapters disabled."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(batch_size=16, eval_batch_size=128))
    """batch_size: prompts per device per generation (x group.n responses); grad_accum: micro-batches per
    optimizer step; max_steps: optimizer steps (0: epochs over the prompts); eval_every: optimizer steps."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpoint interval (optimizer steps, a multiple of the updates per generation) and retention."""
    log: LogConfig = field(default_factory=lambda: LogConfig(every=1))
    """Metrics every N optimizer steps, progress bar, TensorBoard."""

    def updates_per_generation(self) -> int:
        return self.group.epochs * self.group.minibatches

    def aggregation(self) -> str:
        if self.group.aggregation != "auto":
            return self.group.aggregation
        return "constant" if self.group.advantage == "dr_grpo" else "token_mean"

    def validate(self, where: str) -> None:
        self.model.validate(where)
        if not self.rollout.prompts_path:
            raise ConfigError(f"{where}: rollout.prompts_path is required")
        if not self.rewards and not self.reward_model:
            raise ConfigError(f"{where}: no reward: set rewards (e.g. [{{fn: exact_match}}]) and/or reward_model")
        check_training_parts(where, self)
        g, r = self.group, self.rollout
        if g.n < 2:
            raise ConfigError(f"{where}: group.n must be at least 2 (an advantage compares a response with its group), "
                              f"got {g.n}")
        for key in ("epochs", "minibatches", "max_sampling_rounds"):
            check_positive(where, f"group.{key}", getattr(g, key))
        for key in ("clip_low", "clip_high"):
            check_positive(where, f"group.{key}", getattr(g, key))
        if g.clip_low >= 1:
            raise ConfigError(f"{where}: group.clip_low must be below 1 (the ratio's lower bound 1 - clip_low > 0), "
                              f"got {g.clip_low}")
        check_non_negative(where, "group.overlong_buffer", g.overlong_buffer)
        check_positive(where, "rollout.max_new_tokens", r.max_new_tokens)
        if g.overlong_buffer >= r.max_new_tokens:
            raise ConfigError(f"{where}: group.overlong_buffer ({g.overlong_buffer}) must be below "
                              f"rollout.max_new_tokens ({r.max_new_tokens})")
        if g.overlong_buffer and not r.no_eos_penalty:
            raise ConfigError(f"{where}: group.overlong_buffer ramps in rollout.no_eos_penalty, which is 0: set "
                              "rollout.no_eos_penalty (e.g. 1.0), or leave the buffer at 0")
        check_positive(where, "rollout.temperature", r.temperature)
        check_positive(where, "rollout.eval_samples", r.eval_samples)
        check_placement(where, self.placement)
        if not 0.0 < r.top_p <= 1.0:
            raise ConfigError(f"{where}: rollout.top_p must be in (0, 1], got {r.top_p}")
        check_non_negative(where, "rollout.top_k", r.top_k)
        check_non_negative(where, "rollout.no_eos_penalty", r.no_eos_penalty)
        check_non_negative(where, "kl.coef", self.kl.coef)
        if not math.isfinite(self.reward_model_weight):
            raise ConfigError(f"{where}: reward_model_weight must be a finite number")
        responses = self.train.batch_size * g.n
        if responses % (g.minibatches * self.train.grad_accum):
            raise ConfigError(f"{where}: a generation's {responses} responses per device (train.batch_size x group.n) "
                              f"must divide into group.minibatches ({g.minibatches}) x train.grad_accum "
                              f"({self.train.grad_accum}) equal micro-batches")
        every = self.updates_per_generation()
        for key, value in (("checkpoint.save_every", self.checkpoint.save_every), ("train.max_steps", self.train.max_steps)):
            if value % every:
                raise ConfigError(f"{where}: {key} ({value}) must be a multiple of the {every} optimizer steps each "
                                  "generation takes (group.epochs x group.minibatches)")
        if self.keep_best and not (r.eval_prompts_path and self.train.eval_every):
            raise ConfigError(f"{where}: keep_best needs rollout.eval_prompts_path (held-out prompts) and "
                              "train.eval_every > 0 (how often they are scored)")
        self.peft.validate(where, prefix_unsupported_in="GRPO")
