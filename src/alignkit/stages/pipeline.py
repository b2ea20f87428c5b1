"""The pipeline: `alignkit pipeline configs/demo.yaml` (what `make demo` runs).

world     the demo world's data sets, written to run_dir/world
pretrain  the base model, cached by a hash of its config under run_dir/cache (a second run starts
          at once)
sft       supervised fine-tuning of the base on the world's demonstrations -> run_dir/sft
rm        a reward model from the SFT model on the annotator's rankings -> run_dir/rm
cost      (not by default) a cost model from the SFT model on the world's cost rows (of cost_categories)
          -> run_dir/cost
sft-filter (not by default) SFT again from the base on the demonstrations the cost model (else the reward
          model, or sft_filter_model) scores at least sft_filter_min_score -> run_dir/sft-filtered,
          handed on to the later stages as "sft" (the first SFT model stays in the table as "sft-unfiltered")
ppo       PPO from the SFT model against the reward model, on the RL prompts -> run_dir/ppo (the policy
          with the best reward on other training-split prompts, when ppo.keep_best)
grpo      one critic-free RL run per entry of grpo_runs, from the SFT model -> run_dir/grpo/NAME
dpo       DPO (or the loss dpo.loss names) from the SFT model on the same rankings -> run_dir/dpo
best-of-n the SFT model's n samples per RL prompt, the reward model's favourite kept, and the SFT
          model fine-tuned on them (rejection sampling) -> run_dir/best-of-n, best-of-n/sft
distill   a smaller student pretrained like the base (cached), fine-tuned like SFT (run_dir/student-sft),
          then distilled from the teacher (distill_teacher) -> run_dir/distill
eval      every policy so far on held-out requests (and the SFT model behind the rule-based safety
          filter, "sft+filter"), and the reward model's accuracy by kind of pair
          -> run_dir/results.json, results.md, a table

Each stage reads the previous one's output directory; a finished stage is skipped on rerun, an
interrupted one resumes from its newest checkpoint. The stages are one table (STEPS at the end): per
stage its name and the function that runs it (step_*, which fills in the paths the pipeline owns);
the directories each writes, with the config sections their contents depend on, are reuse.WRITES.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignkit.config import PipelineConfig, pipeline_ppo_config, to_yaml
from alignkit.stages.reuse import check_finished_stages, pretrain_key, record_inputs
from alignkit.training.loop import kept_policy
from alignkit.training.run import console, quiet_libraries


@dataclass
class State:
    """What the steps hand on to each other."""

    cfg: PipelineConfig
    run_dir: Path
    world: dict[str, Path]
    """The world's data sets by name."""
    models: dict[str, Path] = field(default_factory=dict)
    """Every policy so far, in the order the table lists them."""
    reward_dir: Path | None = None
    cost_dir: Path | None = None
    ensemble: list[Path] = field(default_factory=list)
    ppo_summary: dict[str, Any] | None = None
    grpo_summaries: dict[str, Any] = field(default_factory=dict)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    rounds_reward: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)
    started: float = 0.0

    def where(self, section: str) -> str:
        return f"{self.run_dir / 'pipeline.yaml'} ({section})"

    def launch(self, stage_dir: str, section: str, stage_cfg: Any, message: str, run: Callable[[Any], Any]) -> Any:
        """Check a stage's filled-in config (against its `section` of the pipeline file), say what
        runs, record what it is built from (stage_dir/pipeline_inputs.yaml), and run it."""
        if section:
            stage_cfg.validate(self.where(section))
        console.print(message)
        record_inputs(self.cfg, self.run_dir, stage_dir)
        return run(stage_cfg)


def step_pretrain(s: State) -> None:
    from alignkit.stages.pretrain import run_pretrain

    out = s.cfg.cache_root() / f"pretrain-{pretrain_key(s.cfg.base_pretrain())}"
    console.print(f"[bold]pretrain[/] {'cached' if (out / 'model' / 'config.json').exists() else 'training'}: {out}")
    s.models["base"] = run_pretrain(dataclasses.replace(s.cfg.base_pretrain(), output_dir=str(out), resume=True))


def sft_from_base(s: State, stage_dir: str, **data: Any) -> Any:
    """The sft section with the pipeline's paths filled in: the base model, the world's
    demonstrations (and `data`'s other changes), output in run_dir/stage_dir."""
    cfg = s.cfg
    base = s.models.get("base") or Path(cfg.sft.model.path)
    s.models.setdefault("base", base)  # no pretrain stage: the given model is the "before" row
    return dataclasses.replace(cfg.sft, output_dir=str(s.run_dir / stage_dir), resume=True,
                               model=dataclasses.replace(cfg.sft.model, path=str(base)),
                               data=dataclasses.replace(cfg.sft.data, train_path=str(s.world["sft"]), **data))


def step_sft(s: State) -> None:
    from alignkit.stages.sft import run_sft

    s.models["sft"] = s.launch("sft", "sft", sft_from_base(s, "sft"), "[bold]sft[/] supervised fine-tuning", run_sft)


def scorer_backbone(s: State, given: str) -> Path | str:
    """What the reward and cost models start from: the SFT model (a LoRA one folded into its base
    first, once: run_dir/sft-merged), else the section's own model.path (`given`)."""
    from alignkit.models import merge_adapter
    from alignkit.models.loading import is_adapter_dir

    start = s.models.get("sft") or given
    if start and is_adapter_dir(start):
        merged = s.run_dir / "sft-merged"
        if not (merged / "config.json").exists():
            merge_adapter(str(start), str(merged))
        start = merged
    return start


def step_rm(s: State) -> None:
    from alignkit.stages.rm import run_rm

    cfg = s.cfg
    start = scorer_backbone(s, cfg.rm.model.path)
    rm_cfg = dataclasses.replace(
        cfg.rm, output_dir=str(s.run_dir / "rm"), resume=True, model=dataclasses.replace(cfg.rm.model, path=str(start)),
        data=dataclasses.replace(cfg.rm.data, train_path=str(s.world["rankings"])),
        normalize=dataclasses.replace(cfg.rm.normalize, prompts_path=str(s.world["rl_prompts"]),
                                      policy_path=str(s.models.get("sft") or start)))
    s.reward_dir = s.launch("rm", "rm", rm_cfg, "[bold]rm[/] reward model on the annotator's rankings", run_rm)
    if cfg.rm_ensemble > 1:
        record_inputs(cfg, s.run_dir, "rm-ensemble")
    for i in range(1, cfg.rm_ensemble):  # further members: the same data and settings, other seeds
        console.print(f"[bold]rm[/] ensemble member {i + 1} of {cfg.rm_ensemble}")
        s.ensemble.append(run_rm(dataclasses.replace(rm_cfg, output_dir=str(s.run_dir / "rm-ensemble" / f"member-{i}"),
                                                     seed=rm_cfg.seed + i)))


def step_cost(s: State) -> None:
    from alignkit.stages.rm import run_rm
    from alignkit.world.datasets import cost_rows_of

    cfg = s.cfg
    rows = s.world["cost"]
    if cfg.cost_categories:  # e.g. harm alone: its own copy of those rows, beside the model
        rows = cost_rows_of(rows, cfg.cost_categories, s.run_dir / "cost" / "rows.jsonl")
    cost_cfg = dataclasses.replace(cfg.cost, output_dir=str(s.run_dir / "cost"), resume=True,
                                   model=dataclasses.replace(cfg.cost.model, path=str(scorer_backbone(s, cfg.cost.model.path))),
                                   data=dataclasses.replace(cfg.cost.data, train_path=str(rows)))
    what = ", ".join(cfg.cost_categories) if cfg.cost_categories else "every category"
    s.cost_dir = s.launch("cost", "cost", cost_cfg, f"[bold]cost[/] cost model on the world's cost rows ({what})", run_rm)


def step_sft_filter(s: State) -> None:
    from alignkit.errors import ConfigError
    from alignkit.stages.sft import run_sft

    cfg = s.cfg
    scorer = cfg.sft_filter_model or s.cost_dir or s.reward_dir
    if not scorer:
        raise ConfigError(f"{s.where('stages')}: sft-filter needs the cost or rm stage (or sft_filter_model)")
    named = {s.reward_dir: "reward model", s.cost_dir: "cost model"}.get(scorer, scorer)
    sft_cfg = sft_from_base(s, "sft-filtered", filter_model=str(scorer), filter_min_score=cfg.sft_filter_min_score)
    filtered = s.launch("sft-filtered", "sft", sft_cfg, "[bold]sft-filter[/] SFT again on the demonstrations the "
                        f"{named} scores at least {cfg.sft_filter_min_score:g}", run_sft)
    # The filtered model is the one handed on; the first stays in the table under another name.
    s.models = {("sft-unfiltered" if name == "sft" else name): path for name, path in s.models.items()}
    s.models["sft"] = filtered


def handed_on_sft(run_dir: Path) -> Path:
    """The SFT model a run's later stages started from: the reward-filtered one when the run has it."""
    filtered = run_dir / "sft-filtered" / "model"
    return filtered if filtered.is_dir() else run_dir / "sft" / "model"


def step_ppo(s: State) -> None:
    from alignkit.stages.ppo import run_ppo
    from alignkit.world.evaluate import summarize_ppo

    cfg = s.cfg
    policy = s.models.get("sft") or Path(cfg.ppo.model.path)
    reward = s.reward_dir or Path(cfg.ppo.reward_model)
    ppo_cfg = pipeline_ppo_config(cfg.ppo, s.run_dir / "ppo", policy, reward, s.world)
    if s.ensemble:
        ppo_cfg = dataclasses.replace(ppo_cfg, reward_ensemble=[str(m) for m in s.ensemble])
    final = s.launch("ppo", "ppo", ppo_cfg, "[bold]ppo[/] RLHF against the reward model", run_ppo)
    s.models["ppo"] = kept_policy(final, cfg.ppo.keep_best)
    s.ppo_summary = summarize_ppo(s.run_dir / "ppo" / "metrics.jsonl", s.models["ppo"] != Path(final))


def step_grpo(s: State) -> None:
    from alignkit.config.demo import pipeline_grpo_config
    from alignkit.stages.grpo import run_grpo
    from alignkit.world.evaluate import summarize_grpo

    cfg = s.cfg
    for name in cfg.grpo_runs:
        grpo_cfg = pipeline_grpo_config(cfg.grpo, name, s.run_dir / "grpo" / name, s.models.get("sft") or
                                        Path(cfg.grpo.model.path), s.reward_dir or cfg.grpo.reward_model, s.world)
        scorer = grpo_cfg.reward_model or " + ".join(str(r.get("fn")) for r in grpo_cfg.rewards)
        final = s.launch("grpo", "grpo", grpo_cfg, f"[bold]grpo[/] {name}: {grpo_cfg.group.advantage} from the SFT "
                         f"model, rewarded by {scorer}", run_grpo)
        s.models[name] = kept_policy(final, cfg.grpo.keep_best)
        s.grpo_summaries[name] = summarize_grpo(s.run_dir / "grpo" / name / "metrics.jsonl",
                                                s.models[name] != Path(final))


def step_rounds(s: State) -> None:
    from alignkit.stages.rounds import run_rounds
    from alignkit.world.annotate import rate_samples

    cfg = s.cfg
    console.print(f"[bold]rounds[/] {cfg.rounds.rounds} on-policy ranking rounds: sample, rate, reward model, PPO")
    record_inputs(cfg, s.run_dir, "rounds")
    rate = lambda rows, r: rate_samples(rows, cfg.world.label_noise, f"{cfg.world.seed}:round-{r}")  # noqa: E731
    s.models["ppo-rounds"], s.rounds_reward, s.rounds = run_rounds(cfg, s.run_dir, s.models["sft"], s.models["ppo"],
                                                                   s.reward_dir, s.world, rate)


def step_dpo(s: State) -> None:
    from alignkit.stages.dpo import run_dpo

    cfg = s.cfg
    policy = s.models.get("sft") or Path(cfg.dpo.model.path)
    dpo_cfg = dataclasses.replace(
        cfg.dpo, output_dir=str(s.run_dir / "dpo"), resume=True, model=dataclasses.replace(cfg.dpo.model, path=str(policy)),
        data=dataclasses.replace(cfg.dpo.data, train_path=str(s.world["rankings"])))
    s.models["dpo"] = s.launch("dpo", "dpo", dpo_cfg, f"[bold]dpo[/] offline preference optimisation ({cfg.dpo.loss}) "
                               "on the annotator's rankings", run_dpo)


def step_best_of_n(s: State) -> None:
    from alignkit.stages.best_of_n import run_best_of_n
    from alignkit.stages.sft import run_sft

    cfg = s.cfg
    policy = s.models.get("sft") or Path(cfg.best_of_n.model.path)
    reward = s.reward_dir or Path(cfg.best_of_n.reward_model)
    bon_cfg = dataclasses.replace(
        cfg.best_of_n, output_dir=str(s.run_dir / "best-of-n"), resume=True,
        model=dataclasses.replace(cfg.best_of_n.model, path=str(policy)), reward_model=str(reward),
        prompts_path=str(s.world["rl_prompts"]))
    data = s.launch("best-of-n", "best_of_n", bon_cfg,
                    f"[bold]best-of-n[/] {cfg.best_of_n.n} samples per RL prompt, the reward model picks", run_best_of_n)
    rft_cfg = dataclasses.replace(
        cfg.rft, output_dir=str(s.run_dir / "best-of-n" / "sft"), resume=True,
        model=dataclasses.replace(cfg.rft.model, path=str(policy)), data=dataclasses.replace(cfg.rft.data, train_path=str(data)))
    s.models["best-of-n"] = s.launch("best-of-n/sft", "rft", rft_cfg,
                                     "[bold]best-of-n[/] fine-tuning the SFT model on the best responses", run_sft)


def step_distill(s: State) -> None:
    from alignkit.stages.distill import run_distill
    from alignkit.stages.pretrain import run_pretrain
    from alignkit.stages.sft import run_sft

    cfg = s.cfg
    student_pretrain = dataclasses.replace(cfg.base_pretrain(), model=cfg.student)
    out = cfg.cache_root() / f"pretrain-{pretrain_key(student_pretrain)}"
    console.print(f"[bold]distill[/] student base ({'cached' if (out / 'model' / 'config.json').exists() else 'training'}): {out}")
    student_base = run_pretrain(dataclasses.replace(student_pretrain, output_dir=str(out), resume=True))
    student_sft = dataclasses.replace(
        cfg.sft, output_dir=str(s.run_dir / "student-sft"), resume=True,
        model=dataclasses.replace(cfg.sft.model, path=str(student_base)),
        data=dataclasses.replace(cfg.sft.data, train_path=str(s.world["sft"])))
    s.models["student-sft"] = s.launch("student-sft", "", student_sft, "[bold]distill[/] the student's own SFT baseline",
                                       run_sft)
    teacher = s.models.get(cfg.distill_teacher) or Path(cfg.distill.teacher)
    distill_cfg = dataclasses.replace(
        cfg.distill, output_dir=str(s.run_dir / "distill"), resume=True, teacher=str(teacher),
        model=dataclasses.replace(cfg.distill.model, path=str(s.models["student-sft"])),
        prompts_path=str(s.world["rl_prompts"]))
    s.models["student-distill"] = s.launch("distill", "distill", distill_cfg, f"[bold]distill[/] {cfg.distill_teacher} -> "
                                           f"the student ({cfg.distill.mode}-level)", run_distill)


def step_eval(s: State) -> None:
    from alignkit.world.datasets import read_items
    from alignkit.world.evaluate import api_judge, evaluate_models, evaluate_reward_model, summarize_distill
    from alignkit.world.html_report import write_report
    from alignkit.world.report import (distill_lines, grpo_lines, judge_lines, ppo_lines, results_table, reward_lines,
                                       rounds_lines, write_results)

    cfg, models, t = s.cfg, dict(s.models), time.time()
    console.print(f"[bold]eval[/] {', '.join(models)} on held-out requests")
    splits = {"heldout_phrasing": read_items(s.world["eval_heldout_phrasing"]),
              "heldout_input": read_items(s.world["eval_heldout_input"])}
    baseline = cfg.eval.baseline if cfg.eval.baseline in models else next(iter(models))
    filters = {}
    if cfg.eval.safety_filter and "sft" in models:
        from alignkit.safety import load_filter

        # The lightweight path: the SFT model with the rule-based filter around its generation, listed
        # right after SFT.
        at = list(models).index("sft") + 1
        items = list(models.items())
        models = dict(items[:at] + [("sft+filter", models["sft"])] + items[at:])
        filters["sft+filter"] = load_filter(cfg.eval.filter_rules or None)
    results = evaluate_models(models, splits, baseline, cfg.eval.max_new_tokens, cfg.eval.batch_size,
                              tuple(cfg.eval.also_vs), filters, api_judge(cfg.eval, s.run_dir))
    if s.reward_dir is not None:
        policy = models.get("sft") or next(iter(models.values()))
        judge = lambda reward: evaluate_reward_model(reward, splits["heldout_phrasing"], policy,  # noqa: E731
                                                     cfg.world.seed, cfg.eval.batch_size)
        results["reward_model"] = judge(s.reward_dir)
        if s.ensemble:
            results["reward_model_ensemble"] = judge([s.reward_dir, *s.ensemble])
        if s.rounds_reward is not None:  # the last round's, on the same pairs and the same SFT samples
            results["reward_model_rounds"] = judge(s.rounds_reward)
    if s.cost_dir is not None:
        from alignkit.training.metrics import read_metrics

        evals = [r for r in read_metrics(s.run_dir / "cost" / "metrics.jsonl") if "eval_accuracy" in r]
        if evals:
            results["cost_model"] = {k: v for k, v in evals[-1].items() if k.startswith("eval_")}
    if s.ppo_summary:
        results["ppo"] = s.ppo_summary
    if s.grpo_summaries:
        results["grpo"] = s.grpo_summaries
    if s.rounds:
        results["rounds"] = s.rounds
    if "student-distill" in models and cfg.distill_teacher in models:
        results["distill"] = summarize_distill(results, cfg.distill_teacher, models)
    s.timings["eval"] = time.time() - t
    results["timings_s"] = {**s.timings, "total": time.time() - s.started}
    paths = write_results(results, s.run_dir)
    report = write_report(results, s.run_dir)
    console.print(results_table(results))
    for line in reward_lines(results) + ppo_lines(results) + grpo_lines(results) + rounds_lines(results) + \
            distill_lines(results) + judge_lines(results):
        console.print(line)
    console.print(f"results: {paths['json']} and {paths['md']}")
    console.print(f"[bold]report: {report}[/] (open it in a browser)")


@dataclass(frozen=True)
class Step:
    """One stage of the pipeline: its name in `stages` and what it runs (the directories it writes,
    with what each depends on, are reuse.WRITES)."""

    name: str
    run: Callable[[State], None]
    needs: str = ""
    """A model this step continues from, without which it is skipped (the rounds continue PPO's)."""


STEPS = (
    Step("pretrain", step_pretrain),
    Step("sft", step_sft),
    Step("rm", step_rm),
    Step("cost", step_cost),
    Step("sft-filter", step_sft_filter),
    Step("ppo", step_ppo),
    Step("grpo", step_grpo),
    Step("rounds", step_rounds, needs="ppo"),
    Step("dpo", step_dpo),
    Step("best-of-n", step_best_of_n),
    Step("distill", step_distill),
    Step("eval", step_eval),
)


def run_pipeline(cfg: PipelineConfig) -> Path:
    if cfg.seeds:  # the whole pipeline once per seed, then the table across seeds
        from alignkit.stages.seeds import run_seeds

        return run_seeds(cfg)
    from alignkit.world.datasets import write_world_data

    quiet_libraries()
    started = time.time()
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    check_finished_stages(cfg, run_dir)
    (run_dir / "pipeline.yaml").write_text(to_yaml(cfg))
    t = time.time()
    world = write_world_data(run_dir / "world", cfg.world)
    state = State(cfg, run_dir, world, timings={"world": time.time() - t}, started=started)
    console.print(f"[bold]world[/] data sets in {run_dir / 'world'}")
    for step in STEPS:
        if step.name in cfg.stages and (not step.needs or step.needs in state.models):
            t = time.time()
            step.run(state)
            state.timings.setdefault(step.name, time.time() - t)
    console.print(f"run directory: {run_dir} ({time.time() - started:.0f} s)")
    return run_dir
