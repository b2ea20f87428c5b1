"""The demo pipeline's configs: the world's data sets, its evaluation, ranking rounds, and the
pipeline that runs the stages in order.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path

from alignkit.config.parts import OptimConfig, TrainConfig, check_non_negative, check_positive, check_row_selection
from alignkit.config.grpo import GRPOConfig
from alignkit.config.ppo import PPOConfig
from alignkit.config.stages import (BestOfNConfig, DistillConfig, DPOConfig, PretrainConfig, RMConfig, SFTConfig,
                                    TinyModelConfig)
from alignkit.errors import ConfigError


@dataclass
class WorldConfig:
    """The demo world's data sets (alignkit.world)."""

    seed: int = 0
    """Seed for every data set; the same seed gives the same files."""
    sft_examples: int = 8000
    """Instruction-response demonstrations to write (before exact duplicates are dropped)."""
    sloppy_share: float = 0.1
    """Share of demonstrations that are imperfect: padded, wrong, over-cautious, or unsafe compliance."""
    thin_families: list[str] = field(default_factory=lambda: ["quote", "last_word"])
    """Families covered thinly in the demonstrations (room for preference learning to help)."""
    thin_weight: float = 0.3
    """Sampling weight of a thin family relative to 1.0 for the others."""
    safety_share: float = 0.2
    """Share of requests from the safety family (harmful and benign look-alikes in equal number)."""
    safety_families: list[str] = field(default_factory=lambda: ["harm"])
    """Safety behaviours the world asks about, sharing safety_share in turn: harm (harmful requests and
    benign look-alikes), discrimination (demeaning a made-up group, to be refused; questions about the
    group, to be answered), false_premise (a request stating a false capital, to be corrected and
    answered; a true one, to be answered). ["harm"] keeps the demo's data as it was."""
    ranking_prompts: int = 3000
    """Prompts with ranked candidate responses (preference data)."""
    candidates: int = 4
    """Candidate responses per ranked prompt (3 or 4)."""
    label_noise: float = 0.1
    """Probability that the simulated annotator swaps one adjacent pair of a ranking."""
    correctness_prompts: int = 0
    """Further skill prompts rated by the annotator over the right answer, bare and padded, a near miss,
    another input's answer and one of them padded, added to the rankings: more right-vs-wrong pairs
    for a reward model that must judge correctness (6 of a row's 9 pairs; the ranked prompts hold
    about 1.6 such pairs in 6 per skill prompt)."""
    rl_prompts: int = 2000
    """Prompts for reinforcement learning (training phrasings and inputs)."""
    eval_prompts: int = 400
    """Prompts in each held-out evaluation split (unless heldout_prompts is set), and in RL's own
    held-out set (rl_eval_prompts)."""
    heldout_prompts: int = 0
    """Prompts in each held-out evaluation split, if not 0 (else eval_prompts). Only the evaluation
    files depend on it, so a finished run can be evaluated again on a larger sample, with narrower
    intervals per cell, without retraining (its stages stay reusable)."""

    def validate(self, where: str) -> None:
        # The family names in thin_families are the world's to check (world.datasets.write_world_data).
        for key in ("sloppy_share", "safety_share", "label_noise"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"{where}: world.{key} must be in [0, 1], got {getattr(self, key)}")
        if self.candidates not in (2, 3, 4):
            raise ConfigError(f"{where}: world.candidates must be 2, 3 or 4, got {self.candidates}")
        for key in ("sft_examples", "ranking_prompts", "rl_prompts", "eval_prompts"):
            check_positive(where, f"world.{key}", getattr(self, key))
        check_non_negative(where, "world.correctness_prompts", self.correctness_prompts)
        check_non_negative(where, "world.heldout_prompts", self.heldout_prompts)
        known = ("harm", "discrimination", "false_premise")
        for name in self.safety_families:
            if name not in known:
                close = difflib.get_close_matches(str(name), known, n=1)
                raise ConfigError(f"{where}: world.safety_families: unknown '{name}'" +
                                  (f"; did you mean '{close[0]}'?" if close else f"; expected {', '.join(known)}"))
        if not self.safety_families or len(set(self.safety_families)) != len(self.safety_families):
            raise ConfigError(f"{where}: world.safety_families must name each behaviour once, at least one; "
                              f"got {self.safety_families}")


@dataclass
class WorldEvalConfig:
    max_new_tokens: int = 24
    """Longest answer generated per request (greedy decoding)."""
    batch_size: int = 128
    """Requests generated together."""
    baseline: str = "base"
    """Model the others' win rates are measured against."""
    also_vs: list[str] = field(default_factory=lambda: ["sft"])
    """Further baselines for win rates (e.g. PPO against SFT), where those models were trained."""
    safety_filter: bool = True
    """Also evaluate the SFT model behind the rule-based safety filter, as the row "sft+filter"."""
    filter_rules: str = ""
    """Rules YAML for that filter (empty: the rules alignkit ships)."""
    judge_url: str = ""
    """An OpenAI-compatible API's base URL (`alignkit serve`, vLLM, a hosted model): judge_model there
    compares each model's answers on new phrasings with baseline's and also_vs', both orders asked."""
    judge_model: str = ""
    """The judge's model name at judge_url."""
    judge_api_key_env: str = ""
    """The environment variable holding the judge API's key (empty: none sent)."""
    judge_prompt: str = ""
    """The judge's pairwise template file ({prompt}, {a}, {b}); empty: the shipped one."""
    judge_concurrency: int = 8
    """Judge requests in flight at once; every verdict is cached in run_dir/judge_cache.jsonl."""

    def validate(self, where: str) -> None:
        if self.judge_url and not self.judge_model:
            raise ConfigError(f"{where}: eval.judge_url needs eval.judge_model, the model's name at that URL")
        if self.judge_url and not self.judge_url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}: eval.judge_url must start with http:// or https://; got {self.judge_url!r}")
        if self.judge_concurrency < 1:
            raise ConfigError(f"{where}: eval.judge_concurrency must be at least 1; got {self.judge_concurrency}")


@dataclass
class RoundsConfig:
    """On-policy ranking rounds after PPO (iterated RLHF: Bai et al. 2022, "Training a helpful and
    harmless assistant", §4.5; Touvron et al. 2023, Llama 2, §3.2.2): the current policy samples k
    responses per prompt, the annotator rates them, the pairs join the reward data, the reward model
    continues on all of it, and PPO continues from the current policy against it."""

    rounds: int = 2
    """Rounds after the first PPO run."""
    prompts: int = 256
    """RL prompts sampled per round (a seeded draw of the RL prompts, another each round)."""
    k: int = 4
    """Responses sampled per prompt from the current policy (different ones; a prompt with fewer than 2
    different responses, or whose responses all tie, adds nothing)."""
    temperature: float = 1.0
    """Sampling temperature of those responses."""
    max_new_tokens: int = 48
    """Longest sampled response."""
    rm_steps: int = 300
    """Reward-model steps per round, continuing from the current reward model on every ranking so far
    (the world's and each round's), with the rm section's other settings."""
    ppo_steps: int = 20
    """PPO iterations per round, from the current policy (its best held-out iteration when ppo.keep_best),
    with the SFT model as the KL reference and the ppo section's other settings."""

    def validate(self, where: str) -> None:
        for key in ("rounds", "prompts", "k", "temperature", "max_new_tokens", "rm_steps", "ppo_steps"):
            check_positive(where, f"rounds.{key}", getattr(self, key))
        if self.k < 2:
            raise ConfigError(f"{where}: rounds.k must be at least 2 (a ranking compares responses), got {self.k}")


# Every stage, in the order they run; the default list leaves out the optional ones.
KNOWN_STAGES = ("pretrain", "sft", "rm", "cost", "sft-filter", "ppo", "grpo", "rounds", "dpo", "best-of-n", "distill", "eval")
OPTIONAL_STAGES = ("cost", "sft-filter")
PIPELINE_STAGES = tuple(s for s in KNOWN_STAGES if s not in OPTIONAL_STAGES)
GRPO_ESTIMATORS = ("grpo", "dr_grpo", "rloo", "reinforce_pp")


def grpo_run(name: str) -> tuple[str, bool]:
    """A pipeline GRPO run's name -> (its estimator, whether it scores with the run's reward model
    instead of the grpo section's reward functions): "rloo" -> ("rloo", False), "grpo-rm" -> ("grpo", True)."""
    rm = name.endswith("-rm")
    return name.removesuffix("-rm"), rm


@dataclass
class PipelineConfig:
    """The pipeline: the demo world's data, then each listed stage reading the previous one's output."""

    run_dir: str = "runs/demo"
    """Everything the pipeline writes goes under this directory."""
    stages: list[str] = field(default_factory=lambda: list(PIPELINE_STAGES))
    """Stages to run, in order: pretrain, sft, rm, ppo, grpo, rounds, dpo, best-of-n, distill, eval (all of
    them by default); and, not by default, cost: a cost model from the SFT model on the world's
    cost rows (the cost section, cost_categories), and sft-filter: SFT again from the base on the
    demonstrations the cost model (else the reward model) scores at least sft_filter_min_score,
    handed on as "sft"."""
    cache_dir: str = ""
    """Where pretrained base models are cached, keyed by their config (empty: $ALIGNKIT_CACHE if set,
    else run_dir/cache)."""
    world: WorldConfig = field(default_factory=WorldConfig)
    """The demo world's data sets."""
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    """Pretraining of the base model (output_dir is set by the pipeline)."""
    sft: SFTConfig = field(default_factory=SFTConfig)
    """Supervised fine-tuning (model.path, data paths and output_dir are set by the pipeline)."""
    rm: RMConfig = field(default_factory=RMConfig)
    """Reward model, started from the SFT model (paths and normalisation prompts set by the pipeline)."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    """PPO from the SFT model with the reward model (paths and prompts set by the pipeline)."""
    grpo: GRPOConfig = field(default_factory=lambda: GRPOConfig(rewards=[{"fn": "world_check"}]))
    """Critic-free RL from the SFT model (paths and prompts set by the pipeline): the settings every
    run in grpo_runs shares; its rewards are the verifier runs' reward functions."""
    grpo_runs: list[str] = field(default_factory=lambda: ["grpo"])
    """The grpo stage's runs, each a row of the table: an estimator (grpo, dr_grpo, rloo,
    reinforce_pp) scored by grpo.rewards alone, or with "-rm" (grpo-rm) by this run's reward model
    alone (grpo.reward_model where the run trains none); each under run_dir/grpo/NAME. The stage's
    directory depends on the whole list: a changed list retrains every run."""
    rm_ensemble: int = 1
    """Reward models trained on the rankings (rm/ and rm-ensemble/member-I/, seeds rm.seed + I); with
    more than one, PPO's reward is their mean minus ppo.reward_uncertainty_coef x their spread."""
    cost: RMConfig = field(default_factory=lambda: RMConfig(objective="cost"))
    """The cost stage: a cost model (objective cost; its score > 0 means unsafe) from the SFT model on the
    world's cost.jsonl (paths set by the pipeline) -> run_dir/cost; the sft-filter stage's scorer."""
    cost_categories: list[str] = field(default_factory=list)
    """The cost stage trains on the world's cost rows of these categories only (harm, discrimination,
    false_premise, skills); empty: all of them. [harm, discrimination, skills]: a cost model of harm alone,
    which as the sft-filter's scorer drops the compliance to harmful and demeaning requests and leaves
    the premise demonstrations to the SFT loss."""
    sft_filter_model: str = ""
    """The model that scores the demonstrations in the sft-filter stage: empty, this run's cost model
    when the cost stage runs, else its reward model; or a reward or cost model directory (a cost
    model's score is its negated cost)."""
    sft_filter_min_score: float = 0.0
    """The sft-filter stage's floor: demonstrations scored below it are dropped before the second SFT
    (the reward model's normalised scale, 0 the mean score of the first SFT model's answers; with a
    cost model, 0 keeps what it judges safe)."""
    rounds: RoundsConfig = field(default_factory=RoundsConfig)
    """On-policy ranking rounds after PPO (the stage "rounds"; its policy is the row "ppo-rounds")."""
    dpo: DPOConfig = field(default_factory=DPOConfig)
    """DPO (or a kin) from the SFT model on the reward model's rankings (paths set by the pipeline)."""
    best_of_n: BestOfNConfig = field(default_factory=BestOfNConfig)
    """best-of-n: the SFT model's n samples per RL prompt, the reward model's favourite kept (paths set by
    the pipeline); then `rft` fine-tunes the SFT model on them."""
    rft: SFTConfig = field(default_factory=lambda: SFTConfig(optim=OptimConfig(lr=1e-4), train=TrainConfig(
        batch_size=32, max_steps=100)))
    """Rejection-sampling fine-tuning: SFT from the SFT model on the best-of-n data (the "best-of-n" row)."""
    student: TinyModelConfig = field(default_factory=lambda: TinyModelConfig(hidden=80))
    """distill: the student's architecture (hidden 80: 44% of the demo base's parameters). It is
    pretrained like the base (same corpus, hence the same tokenizer) and fine-tuned with the sft
    settings ("student-sft") before distillation."""
    distill: DistillConfig = field(default_factory=DistillConfig)
    """distill: the teacher (distill_teacher) into the student's SFT model, on the RL prompts."""
    distill_teacher: str = "dpo"
    """distill: which model of this run teaches: dpo, ppo, best-of-n or sft."""
    eval: WorldEvalConfig = field(default_factory=WorldEvalConfig)
    """Evaluation of every model on the held-out requests."""
    seeds: list[int] = field(default_factory=list)
    """Run the whole pipeline once per seed (e.g. `seeds=0,1,2,3,4`), each under run_dir/seed-N with
    world.seed and every stage's seed set to N, then write the results across seeds (seeds.md,
    seeds.json, seeds.html in run_dir). Empty: one run, with the seeds as configured."""
    seed_workers: int = 1
    """Seeds run at the same time, each in its own process (its log in run_dir/seed-N/log.txt). Each
    process uses torch's default threads, so the numbers do not depend on this; on 2 cores, 1 is fastest."""

    def base_pretrain(self) -> PretrainConfig:
        """The pretrain config the base is built with: its corpus states the world's group facts when
        world.safety_families has discrimination (so a base model can know them)."""
        if "discrimination" in self.world.safety_families and not self.pretrain.corpus.path:
            return dataclasses.replace(self.pretrain, corpus=dataclasses.replace(self.pretrain.corpus, groups=True))
        return self.pretrain

    def cache_root(self) -> Path:
        """Where pretrained bases are cached: cache_dir, else $ALIGNKIT_CACHE, else run_dir/cache (so
        everything the demo writes stays under its run directory)."""
        if self.cache_dir:
            return Path(self.cache_dir)
        return Path(os.environ.get("ALIGNKIT_CACHE", Path(self.run_dir) / "cache"))

    def validate(self, where: str) -> None:
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"{where}: seeds lists a seed twice: {self.seeds}")
        if any(s < 0 for s in self.seeds):
            raise ConfigError(f"{where}: seeds must be non-negative integers, got {self.seeds}")
        check_positive(where, "seed_workers", self.seed_workers)
        check_positive(where, "rm_ensemble", self.rm_ensemble)
        check_row_selection(f"{where}: the sft section", self.sft.data)  # at load, not after pretraining
        if self.seeds and "eval" not in self.stages:
            raise ConfigError(f"{where}: seeds needs the eval stage (the table across seeds is built from each "
                              "seed's results); add eval to stages")
        for stage in self.stages:
            if stage not in KNOWN_STAGES:
                close = difflib.get_close_matches(stage, KNOWN_STAGES, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise ConfigError(f"{where}: unknown stage '{stage}' in stages (known: {', '.join(KNOWN_STAGES)}){hint}")
        if "sft-filter" in self.stages and not {"rm", "cost"} & set(self.stages) and not self.sft_filter_model:
            raise ConfigError(f"{where}: the sft-filter stage scores the demonstrations with this run's cost or "
                              "reward model; add cost or rm to stages (or give sft_filter_model)")
        written = ["skills", *self.world.safety_families]  # the categories of the world's cost rows
        for name in self.cost_categories:
            if name not in written:
                close = difflib.get_close_matches(str(name), written, n=1)
                raise ConfigError(f"{where}: cost_categories: '{name}' is not a category of this world's cost rows "
                                  f"({', '.join(written)}: skills and world.safety_families)" +
                                  (f"; did you mean '{close[0]}'?" if close else ""))
        if "cost" in self.stages and self.cost.objective != "cost":
            raise ConfigError(f"{where}: cost.objective must be cost (the cost stage trains a cost model), got "
                              f"{self.cost.objective!r}")
        self.world.validate(where)
        self.eval.validate(where)
        self.pretrain.validate(where)
        if "rounds" in self.stages:
            self.rounds.validate(where)
            missing = [s for s in ("rm", "ppo") if s not in self.stages]
            if missing:
                raise ConfigError(f"{where}: the rounds stage continues the reward model and PPO of this run; add "
                                  f"{' and '.join(missing)} to stages")
        if "grpo" in self.stages:
            for name in self.grpo_runs:
                estimator, rm = grpo_run(name)
                if estimator not in GRPO_ESTIMATORS:
                    close = difflib.get_close_matches(estimator, GRPO_ESTIMATORS, n=1)
                    raise ConfigError(f"{where}: grpo_runs: '{name}' is not an estimator (optionally with -rm): "
                                      f"{', '.join(GRPO_ESTIMATORS)}" + (f"; did you mean '{close[0]}'?" if close else ""))
                if rm and "rm" not in self.stages and not self.grpo.reward_model:
                    raise ConfigError(f"{where}: grpo_runs: '{name}' scores with the reward model; add rm to stages")
            if len(set(self.grpo_runs)) != len(self.grpo_runs) or not self.grpo_runs:
                raise ConfigError(f"{where}: grpo_runs must name at least one run, each once; got {self.grpo_runs}")
        if "distill" in self.stages and self.distill_teacher not in self.stages and not self.distill.teacher:
            raise ConfigError(f"{where}: distill_teacher '{self.distill_teacher}' is not a stage of this run "
                              f"(stages: {', '.join(self.stages)}); list it in stages, or set distill.teacher to a "
                              "model directory")


def pipeline_ppo_config(ppo: PPOConfig, output_dir: Path, policy: Path, reward: Path, world: dict[str, Path]) -> PPOConfig:
    """The pipeline's PPO stage config (and each ranking round's): `ppo` with the policy, the reward
    model and the world's RL prompts (held-out reward on its other training-split prompts) filled in."""
    return dataclasses.replace(
        ppo, output_dir=str(output_dir), resume=True, model=dataclasses.replace(ppo.model, path=str(policy)),
        reward_model=str(reward), rollout=dataclasses.replace(ppo.rollout, prompts_path=str(world["rl_prompts"]),
                                                              eval_prompts_path=str(world["rl_eval_prompts"])))


def pipeline_grpo_config(grpo: GRPOConfig, name: str, output_dir: Path, policy: Path, reward: Path | str,
                         world: dict[str, Path]) -> GRPOConfig:
    """The pipeline's GRPO run `name` (an entry of grpo_runs): `grpo` with its estimator, the policy,
    the world's RL prompts (held-out reward on its other training-split prompts), and its reward:
    the section's reward functions, or with "-rm" the reward model alone."""
    estimator, with_rm = grpo_run(name)
    return dataclasses.replace(
        grpo, output_dir=str(output_dir), resume=True, model=dataclasses.replace(grpo.model, path=str(policy)),
        group=dataclasses.replace(grpo.group, advantage=estimator), rewards=[] if with_rm else grpo.rewards,
        reward_model=str(reward) if with_rm else "",
        rollout=dataclasses.replace(grpo.rollout, prompts_path=str(world["rl_prompts"]),
                                    eval_prompts_path=str(world["rl_eval_prompts"])))
