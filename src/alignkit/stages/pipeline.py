"""The pipeline: `alignkit pipeline configs/demo.yaml` (what `make demo` runs).

world     the demo world's data sets, written to run_dir/world
pretrain  the base model, cached by a hash of its config under run_dir/cache (a second run starts
          at once)
sft       supervised fine-tuning of the base on the world's demonstrations -> run_dir/sft
rm        a reward model from the SFT model on the annotator's rankings -> run_dir/rm
ppo       PPO from the SFT model against the reward model, on the RL prompts -> run_dir/ppo (the policy
          with the best reward on other training-split prompts, when ppo.keep_best)
dpo       DPO (or the loss dpo.loss names) from the SFT model on the same rankings -> run_dir/dpo
best-of-n the SFT model's n samples per RL prompt, the reward model's favourite kept, and the SFT
          model fine-tuned on them (rejection sampling) -> run_dir/best-of-n, best-of-n/sft
distill   a smaller student pretrained like the base (cached), fine-tuned like SFT (run_dir/student-sft),
          then distilled from the teacher (distill_teacher) -> run_dir/distill
eval      every policy so far on held-out requests (and the SFT model behind the rule-based safety
          filter, "sft+filter"), and the reward model's accuracy by kind of pair
          -> run_dir/results.json, results.md, a table

Each stage reads the previous one's output directory; a finished stage is skipped on rerun, an
interrupted one resumes from its newest checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from pathlib import Path
from typing import Any

from alignkit.config import PipelineConfig, to_yaml
from alignkit.training.run import console, quiet_libraries


def cache_root(cfg: PipelineConfig) -> Path:
    """Where pretrained bases are cached: cache_dir, else $ALIGNKIT_CACHE, else run_dir/cache (so
    everything the demo writes stays under its run directory)."""
    if cfg.cache_dir:
        return Path(cfg.cache_dir)
    return Path(os.environ.get("ALIGNKIT_CACHE", Path(cfg.run_dir) / "cache"))


def pretrain_key(cfg: Any) -> str:
    """A short hash of what a pretrained base depends on: its config (without its output location)
    and the corpus itself, so a changed corpus file or corpus generator is never served stale."""
    from alignkit.stages.pretrain import load_documents

    digest = hashlib.sha256(to_yaml(dataclasses.replace(cfg, output_dir="", resume=False)).encode())
    for doc in load_documents(cfg):
        digest.update(doc.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


# What each stage's output depends on: a change to any of these sections makes it stale. Keys are the
# directories the stages write under run_dir.
DEPENDS_ON = {"sft": ("world", "pretrain", "sft"), "rm": ("world", "pretrain", "sft", "rm"),
              "rm-ensemble": ("world", "pretrain", "sft", "rm", "rm_ensemble"),
              "ppo": ("world", "pretrain", "sft", "rm", "rm_ensemble", "ppo"),
              "rounds": ("world", "pretrain", "sft", "rm", "rm_ensemble", "ppo", "rounds"), "dpo": ("world", "pretrain", "sft", "dpo"),
              "best-of-n": ("world", "pretrain", "sft", "rm", "best_of_n"),
              "best-of-n/sft": ("world", "pretrain", "sft", "rm", "best_of_n", "rft"),
              "student-sft": ("world", "pretrain", "student", "sft"),
              "distill": ("world", "pretrain", "student", "sft", "distill", "distill_teacher")}
# directory -> the stage that makes it
PIPELINE_STAGE_OF = {"best-of-n/sft": "best-of-n", "student-sft": "distill", "rm-ensemble": "rm"}
INPUTS_FILE = "pipeline_inputs.yaml"


def stage_inputs(cfg: PipelineConfig, stage_dir: str) -> dict[str, Any]:
    """The config sections a stage directory's output depends on, with their values (the distilled
    student also depends on whatever its teacher depends on)."""
    import yaml

    names = list(DEPENDS_ON[stage_dir])
    if stage_dir == "distill":
        teacher = {"best-of-n": "best-of-n/sft"}.get(cfg.distill_teacher, cfg.distill_teacher)
        names += [n for n in DEPENDS_ON.get(teacher, ()) if n not in names]
    full = yaml.safe_load(to_yaml(cfg))
    return {name: full.get(name) for name in names}


def record_inputs(cfg: PipelineConfig, run_dir: Path, stage_dir: str) -> None:
    """Write what a stage is about to be built from into its directory, before it starts: a later run
    compares against it (a finished or a half-finished stage alike)."""
    import yaml

    out = run_dir / stage_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / INPUTS_FILE).write_text(yaml.safe_dump(stage_inputs(cfg, stage_dir), sort_keys=False))


def check_finished_stages(cfg: PipelineConfig, run_dir: Path) -> None:
    """Refuse to reuse a stage whose inputs changed since it was built (say, a new world.sloppy_share
    with the SFT model of the old world): a rerun skips finished stages and resumes started ones, so it
    would silently report stale models. Each stage directory records its own inputs (INPUTS_FILE);
    a run directory from before that falls back to the last pipeline.yaml."""
    import yaml

    from alignkit.errors import ConfigError

    old_pipeline = run_dir / "pipeline.yaml"
    for stage_dir in DEPENDS_ON:
        if PIPELINE_STAGE_OF.get(stage_dir, stage_dir) not in cfg.stages:
            continue  # only a stage this run would reuse matters
        recorded = run_dir / stage_dir / INPUTS_FILE
        if recorded.is_file():
            old, source = yaml.safe_load(recorded.read_text()) or {}, recorded
        elif (run_dir / stage_dir / "model").is_dir() and old_pipeline.is_file():
            old, source = yaml.safe_load(old_pipeline.read_text()) or {}, old_pipeline
        else:
            continue
        new = stage_inputs(cfg, stage_dir)
        # A key the record lacks came with a newer alignkit: its default is what the stage was built with.
        old = with_defaults(old, stage_inputs(PipelineConfig(), stage_dir))
        changed = [name for name in new if old.get(name) != new[name]]
        if changed:
            raise ConfigError(f"{run_dir} holds a {stage_dir} stage made with other {', '.join(changed)} settings "
                              f"(see {source}); choose another run_dir, or delete {run_dir / stage_dir} and the "
                              "stages after it to retrain them")


def with_defaults(recorded: Any, defaults: Any) -> Any:
    """`recorded` with every key it lacks (at any depth) taken from `defaults`."""
    if not isinstance(recorded, dict) or not isinstance(defaults, dict):
        return recorded
    return {**defaults, **{k: with_defaults(v, defaults.get(k)) for k, v in recorded.items()}}


def run_pipeline(cfg: PipelineConfig) -> Path:
    if cfg.seeds:  # the whole pipeline once per seed, then the table across seeds
        from alignkit.stages.seeds import run_seeds

        return run_seeds(cfg)
    quiet_libraries()
    started = time.time()
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    check_finished_stages(cfg, run_dir)
    (run_dir / "pipeline.yaml").write_text(to_yaml(cfg))
    timings: dict[str, float] = {}

    t = time.time()
    from alignkit.world.datasets import read_items, write_world_data

    world = write_world_data(run_dir / "world", cfg.world)
    timings["world"] = time.time() - t
    console.print(f"[bold]world[/] data sets in {run_dir / 'world'}")
    models: dict[str, Path] = {}

    if "pretrain" in cfg.stages:
        from alignkit.stages.pretrain import run_pretrain

        t = time.time()
        out = cache_root(cfg) / f"pretrain-{pretrain_key(cfg.pretrain)}"
        done = (out / "model" / "config.json").exists()
        console.print(f"[bold]pretrain[/] {'cached' if done else 'training'}: {out}")
        models["base"] = run_pretrain(dataclasses.replace(cfg.pretrain, output_dir=str(out), resume=True))
        timings["pretrain"] = time.time() - t

    if "sft" in cfg.stages:
        from alignkit.stages.sft import run_sft

        t = time.time()
        base = models.get("base") or Path(cfg.sft.model.path)
        sft_cfg = dataclasses.replace(
            cfg.sft, output_dir=str(run_dir / "sft"), resume=True,
            model=dataclasses.replace(cfg.sft.model, path=str(base)),
            data=dataclasses.replace(cfg.sft.data, train_path=str(world["sft"])))
        sft_cfg.validate(f"{run_dir / 'pipeline.yaml'} (sft)")
        console.print("[bold]sft[/] supervised fine-tuning")
        record_inputs(cfg, run_dir, "sft")
        models["sft"] = run_sft(sft_cfg)
        timings["sft"] = time.time() - t

    reward_dir: Path | None = None
    ppo_summary: dict[str, Any] | None = None
    ensemble: list[Path] = []
    if "rm" in cfg.stages:
        from alignkit.stages.rm import run_rm

        t = time.time()
        start = models.get("sft") or Path(cfg.rm.model.path)
        if start and (Path(start) / "adapter_config.json").exists():  # a LoRA SFT model: fold it in first
            from alignkit.models import merge_adapter

            merged = run_dir / "sft-merged"
            if not (merged / "config.json").exists():
                merge_adapter(str(start), str(merged))
            start = merged
        rm_cfg = dataclasses.replace(
            cfg.rm, output_dir=str(run_dir / "rm"), resume=True,
            model=dataclasses.replace(cfg.rm.model, path=str(start)),
            data=dataclasses.replace(cfg.rm.data, train_path=str(world["rankings"])),
            normalize=dataclasses.replace(cfg.rm.normalize, prompts_path=str(world["rl_prompts"]),
                                          policy_path=str(models.get("sft") or start)))
        rm_cfg.validate(f"{run_dir / 'pipeline.yaml'} (rm)")
        console.print("[bold]rm[/] reward model on the annotator's rankings")
        record_inputs(cfg, run_dir, "rm")
        reward_dir = run_rm(rm_cfg)
        if cfg.rm_ensemble > 1:
            record_inputs(cfg, run_dir, "rm-ensemble")
        for i in range(1, cfg.rm_ensemble):  # further members: the same data and settings, other seeds
            console.print(f"[bold]rm[/] ensemble member {i + 1} of {cfg.rm_ensemble}")
            ensemble.append(run_rm(dataclasses.replace(rm_cfg, output_dir=str(run_dir / "rm-ensemble" / f"member-{i}"),
                                                       seed=rm_cfg.seed + i)))
        timings["rm"] = time.time() - t

    if "ppo" in cfg.stages:
        from alignkit.stages.ppo import run_ppo

        t = time.time()
        policy = models.get("sft") or Path(cfg.ppo.model.path)
        reward = reward_dir or Path(cfg.ppo.reward_model)
        ppo_cfg = ppo_config(cfg.ppo, run_dir / "ppo", policy, reward, world)
        if ensemble:
            ppo_cfg = dataclasses.replace(ppo_cfg, reward_ensemble=[str(m) for m in ensemble])
        ppo_cfg.validate(f"{run_dir / 'pipeline.yaml'} (ppo)")
        console.print("[bold]ppo[/] RLHF against the reward model")
        record_inputs(cfg, run_dir, "ppo")
        final = run_ppo(ppo_cfg)
        best = run_dir / "ppo" / "best"
        models["ppo"] = best if cfg.ppo.keep_best and (best / "config.json").exists() else final
        ppo_summary = summarize_ppo(run_dir / "ppo" / "metrics.jsonl", models["ppo"] == best)
        timings["ppo"] = time.time() - t

    rounds: list[dict[str, Any]] = []
    rounds_reward: Path | None = None
    if "rounds" in cfg.stages and "ppo" in models:
        from alignkit.stages.rounds import run_rounds
        from alignkit.world.annotate import rate_samples

        t = time.time()
        console.print(f"[bold]rounds[/] {cfg.rounds.rounds} on-policy ranking rounds: sample, rate, reward model, PPO")
        record_inputs(cfg, run_dir, "rounds")
        rate = lambda rows, r: rate_samples(rows, cfg.world.label_noise, f"{cfg.world.seed}:round-{r}")  # noqa: E731
        models["ppo-rounds"], rounds_reward, rounds = run_rounds(cfg, run_dir, models["sft"], models["ppo"],
                                                                 reward_dir, world, rate)
        timings["rounds"] = time.time() - t

    if "dpo" in cfg.stages:
        from alignkit.stages.dpo import run_dpo

        t = time.time()
        policy = models.get("sft") or Path(cfg.dpo.model.path)
        dpo_cfg = dataclasses.replace(
            cfg.dpo, output_dir=str(run_dir / "dpo"), resume=True, model=dataclasses.replace(cfg.dpo.model, path=str(policy)),
            data=dataclasses.replace(cfg.dpo.data, train_path=str(world["rankings"])))
        dpo_cfg.validate(f"{run_dir / 'pipeline.yaml'} (dpo)")
        console.print(f"[bold]dpo[/] offline preference optimisation ({cfg.dpo.loss}) on the annotator's rankings")
        record_inputs(cfg, run_dir, "dpo")
        models["dpo"] = run_dpo(dpo_cfg)
        timings["dpo"] = time.time() - t

    if "best-of-n" in cfg.stages:
        from alignkit.stages.best_of_n import run_best_of_n
        from alignkit.stages.sft import run_sft

        t = time.time()
        policy = models.get("sft") or Path(cfg.best_of_n.model.path)
        reward = reward_dir or Path(cfg.best_of_n.reward_model)
        bon_cfg = dataclasses.replace(
            cfg.best_of_n, output_dir=str(run_dir / "best-of-n"), resume=True,
            model=dataclasses.replace(cfg.best_of_n.model, path=str(policy)), reward_model=str(reward),
            prompts_path=str(world["rl_prompts"]))
        bon_cfg.validate(f"{run_dir / 'pipeline.yaml'} (best_of_n)")
        console.print(f"[bold]best-of-n[/] {cfg.best_of_n.n} samples per RL prompt, the reward model picks")
        record_inputs(cfg, run_dir, "best-of-n")
        data = run_best_of_n(bon_cfg)
        rft_cfg = dataclasses.replace(
            cfg.rft, output_dir=str(run_dir / "best-of-n" / "sft"), resume=True,
            model=dataclasses.replace(cfg.rft.model, path=str(policy)),
            data=dataclasses.replace(cfg.rft.data, train_path=str(data)))
        rft_cfg.validate(f"{run_dir / 'pipeline.yaml'} (rft)")
        console.print("[bold]best-of-n[/] fine-tuning the SFT model on the best responses")
        record_inputs(cfg, run_dir, "best-of-n/sft")
        models["best-of-n"] = run_sft(rft_cfg)
        timings["best-of-n"] = time.time() - t

    if "distill" in cfg.stages:
        from alignkit.stages.distill import run_distill
        from alignkit.stages.pretrain import run_pretrain
        from alignkit.stages.sft import run_sft

        t = time.time()
        student_pretrain = dataclasses.replace(cfg.pretrain, model=cfg.student)
        out = cache_root(cfg) / f"pretrain-{pretrain_key(student_pretrain)}"
        console.print(f"[bold]distill[/] student base ({'cached' if (out / 'model' / 'config.json').exists() else 'training'}): {out}")
        student_base = run_pretrain(dataclasses.replace(student_pretrain, output_dir=str(out), resume=True))
        student_sft = dataclasses.replace(
            cfg.sft, output_dir=str(run_dir / "student-sft"), resume=True,
            model=dataclasses.replace(cfg.sft.model, path=str(student_base)),
            data=dataclasses.replace(cfg.sft.data, train_path=str(world["sft"])))
        console.print("[bold]distill[/] the student's own SFT baseline")
        record_inputs(cfg, run_dir, "student-sft")
        models["student-sft"] = run_sft(student_sft)
        teacher = models.get(cfg.distill_teacher) or Path(cfg.distill.teacher)
        distill_cfg = dataclasses.replace(
            cfg.distill, output_dir=str(run_dir / "distill"), resume=True, teacher=str(teacher),
            model=dataclasses.replace(cfg.distill.model, path=str(models["student-sft"])),
            prompts_path=str(world["rl_prompts"]))
        distill_cfg.validate(f"{run_dir / 'pipeline.yaml'} (distill)")
        console.print(f"[bold]distill[/] {cfg.distill_teacher} -> the student ({cfg.distill.mode}-level)")
        record_inputs(cfg, run_dir, "distill")
        models["student-distill"] = run_distill(distill_cfg)
        timings["distill"] = time.time() - t

    if "eval" in cfg.stages:
        from alignkit.world.evaluate import evaluate_models
        from alignkit.world.report import (distill_lines, ppo_lines, results_table, reward_lines, rounds_lines,
                                           write_results)

        t = time.time()
        console.print(f"[bold]eval[/] {', '.join(models)} on held-out requests")
        splits = {"heldout_phrasing": read_items(world["eval_heldout_phrasing"]),
                  "heldout_input": read_items(world["eval_heldout_input"])}
        baseline = cfg.eval.baseline if cfg.eval.baseline in models else next(iter(models))
        filters = {}
        if cfg.eval.safety_filter and "sft" in models:
            from alignkit.safety import load_filter

            # The lightweight path: the SFT model with the rule-based filter around its generation,
            # listed right after SFT.
            at = list(models).index("sft") + 1
            items = list(models.items())
            models = dict(items[:at] + [("sft+filter", models["sft"])] + items[at:])
            filters["sft+filter"] = load_filter(cfg.eval.filter_rules or None)
        results = evaluate_models(models, splits, baseline, cfg.eval.max_new_tokens, cfg.eval.batch_size,
                                  tuple(cfg.eval.also_vs), filters)
        if reward_dir is not None:
            from alignkit.world.evaluate import evaluate_reward_model

            policy = models.get("sft") or next(iter(models.values()))
            results["reward_model"] = evaluate_reward_model(reward_dir, splits["heldout_phrasing"], policy,
                                                            cfg.world.seed, cfg.eval.batch_size)
            if ensemble:
                results["reward_model_ensemble"] = evaluate_reward_model([reward_dir, *ensemble], splits["heldout_phrasing"],
                                                                         policy, cfg.world.seed, cfg.eval.batch_size)
            if rounds_reward is not None:  # the last round's, on the same pairs and the same SFT samples
                results["reward_model_rounds"] = evaluate_reward_model(rounds_reward, splits["heldout_phrasing"],
                                                                       policy, cfg.world.seed, cfg.eval.batch_size)
        if ppo_summary:
            results["ppo"] = ppo_summary
        if rounds:
            results["rounds"] = rounds
        if "student-distill" in models and cfg.distill_teacher in models:
            results["distill"] = summarize_distill(results, cfg.distill_teacher, models)
        timings["eval"] = time.time() - t
        results["timings_s"] = {**timings, "total": time.time() - started}
        paths = write_results(results, run_dir)
        from alignkit.world.html_report import write_report

        report = write_report(results, run_dir)
        console.print(results_table(results))
        for line in reward_lines(results) + ppo_lines(results) + rounds_lines(results) + distill_lines(results):
            console.print(line)
        console.print(f"results: {paths['json']} and {paths['md']}")
        console.print(f"[bold]report: {report}[/] (open it in a browser)")
    console.print(f"run directory: {run_dir} ({time.time() - started:.0f} s)")
    return run_dir


def ppo_config(ppo: Any, output_dir: Path, policy: Path, reward: Path, world: dict[str, Path]) -> Any:
    """The pipeline's PPO stage config: `ppo` with the SFT policy, the reward model and the world's
    RL prompts (held-out reward on its other training-split prompts) filled in."""
    return dataclasses.replace(
        ppo, output_dir=str(output_dir), resume=True, model=dataclasses.replace(ppo.model, path=str(policy)),
        reward_model=str(reward), rollout=dataclasses.replace(ppo.rollout, prompts_path=str(world["rl_prompts"]),
                                                              eval_prompts_path=str(world["rl_eval_prompts"])))


def summarize_distill(results: dict[str, Any], teacher: str, models: dict[str, Path]) -> dict[str, Any]:
    """How much of the teacher's accuracy gain over the student's own SFT model the distilled student
    recovers, per split: (distilled - student SFT) / (teacher - student SFT); and the two sizes."""
    from alignkit.models import load_causal_lm

    acc = lambda name, split: results["models"][name]["scores"][split]["accuracy"]  # noqa: E731
    size = lambda name: sum(p.numel() for p in load_causal_lm(models[name]).parameters())  # noqa: E731
    recovered, gains = {}, {}
    for split in results["splits"]:
        gap = acc(teacher, split) - acc("student-sft", split)
        gains[split] = {"teacher": gap, "student": acc("student-distill", split) - acc("student-sft", split)}
        recovered[split] = gains[split]["student"] / gap if gap > 0 else None
    return {"teacher": teacher, "teacher_params": size(teacher), "student_params": size("student-distill"),
            "recovered": recovered, "gains": gains}


def summarize_ppo(metrics_path: Path, kept_best: bool) -> dict[str, Any] | None:
    """The PPO run in a few numbers: iterations, the one kept (best held-out reward, or the last),
    its held-out reward and KL to the reference, and the largest KL of any iteration."""
    from alignkit.training.metrics import read_metrics

    rows = read_metrics(metrics_path)
    train = [r for r in rows if "kl" in r]
    evals = [r for r in rows if "eval_reward" in r]
    if not train or not evals:
        return None
    kept = max(evals, key=lambda r: r["eval_reward"]) if kept_best else evals[-1]
    # Iteration 0 is the starting (SFT) policy itself: KL 0. A row's KL is that of its rollouts, taken
    # before its update; the policy kept after iteration k is nearest to the rollouts of k + 1.
    after = next((r for r in train if r["step"] == kept["step"] + 1), train[-1])
    return {"iterations": train[-1]["step"], "kept_iteration": kept["step"], "eval_reward": kept["eval_reward"],
            "eval_reward_start": evals[0]["eval_reward"], "kl": after["kl"] if kept["step"] else 0.0,
            "kl_max": max(r["kl"] for r in train)}
