"""Which finished stage directories a rerun of the pipeline may reuse: each records the config it was
built from (pipeline_inputs.yaml), and a later run whose settings for it differ stops and names it
rather than reporting stale models. Pretrained bases are cached by a hash of their config and corpus.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

from alignkit import config as C
from alignkit.config import PipelineConfig, to_yaml

BASE = ("world", "pretrain")
# What a stage after SFT starts from: "sft_filter" stands for the sft-filter stage's scorer (with the
# cost section, when this run's cost model scores) and floor when it runs (the handed-on SFT model is
# then another one) and None when not (stage_inputs).
HANDED_ON = (*BASE, "sft", "rm", "sft_filter")
# Each directory the stages write under run_dir -> (the stage that writes it, the config sections its
# output depends on: a change to any of them makes a finished directory stale).
WRITES = {
    "sft": ("sft", (*BASE, "sft")),
    "rm": ("rm", (*BASE, "sft", "rm")),
    "rm-ensemble": ("rm", (*BASE, "sft", "rm", "rm_ensemble")),
    "cost": ("cost", (*BASE, "sft", "cost", "cost_categories")),
    "sft-filtered": ("sft-filter", (*BASE, "sft", "rm", "sft_filter")),
    "ppo": ("ppo", (*HANDED_ON, "rm_ensemble", "ppo")),
    "grpo": ("grpo", (*HANDED_ON, "grpo", "grpo_runs")),
    "rounds": ("rounds", (*HANDED_ON, "rm_ensemble", "ppo", "rounds")),
    "dpo": ("dpo", (*BASE, "sft", "sft_filter", "dpo")),
    "best-of-n": ("best-of-n", (*HANDED_ON, "best_of_n")),
    "best-of-n/sft": ("best-of-n", (*HANDED_ON, "best_of_n", "rft")),
    "student-sft": ("distill", (*BASE, "student", "sft")),
    "distill": ("distill", (*BASE, "student", "sft", "distill", "distill_teacher")),
}
DEPENDS_ON = {d: deps for d, (_, deps) in WRITES.items()}
PIPELINE_STAGE_OF = {d: stage for d, (stage, _) in WRITES.items()}


def pretrain_key(cfg: Any) -> str:
    """A short hash of what a pretrained base depends on: its config (without its output location)
    and the corpus itself, so a changed corpus file or corpus generator is never served stale."""
    from alignkit.stages.pretrain import load_documents

    text = to_yaml(dataclasses.replace(cfg, output_dir="", resume=False))  # corpus.groups off: left out, so
    digest = hashlib.sha256(text.replace("\n  groups: false\n", "\n").encode())  # older caches keep their key
    for doc in load_documents(cfg):
        digest.update(doc.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


INPUTS_FILE = "pipeline_inputs.yaml"
# World fields only the evaluation files depend on: no stage directory is built from them, so changing
# one (a larger held-out sample) keeps every finished stage reusable.
EVAL_ONLY_WORLD = ("heldout_prompts",)


def _without_eval_only(inputs: dict[str, Any]) -> dict[str, Any]:
    if isinstance(inputs.get("world"), dict):
        inputs = {**inputs, "world": {k: v for k, v in inputs["world"].items() if k not in EVAL_ONLY_WORLD}}
    return inputs


def stage_inputs(cfg: PipelineConfig, stage_dir: str) -> dict[str, Any]:
    """The config sections a stage directory's output depends on, with their values (the distilled
    student also depends on whatever its teacher depends on)."""
    import yaml

    names = list(DEPENDS_ON[stage_dir])
    if stage_dir == "distill":
        teacher = {"best-of-n": "best-of-n/sft"}.get(cfg.distill_teacher, cfg.distill_teacher)
        names += [n for n in DEPENDS_ON.get(teacher, ()) if n not in names]
    full = yaml.safe_load(to_yaml(cfg))
    full["sft_filter"] = ({"model": cfg.sft_filter_model, "min_score": cfg.sft_filter_min_score}
                          if "sft-filter" in cfg.stages else None)
    if full["sft_filter"] and not cfg.sft_filter_model and "cost" in cfg.stages:  # scored by this run's cost model
        full["sft_filter"].update(cost=full["cost"], cost_categories=full["cost_categories"])
    return _without_eval_only({name: full.get(name) for name in names})


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
        old = C.with_defaults(_without_eval_only(old), stage_inputs(PipelineConfig(), stage_dir))
        changed = [name for name in new if old.get(name) != new[name]]
        if changed:
            raise ConfigError(f"{run_dir} holds a {stage_dir} stage made with other {', '.join(changed)} settings "
                              f"(see {source}); choose another run_dir, or delete {run_dir / stage_dir} and the "
                              "stages after it to retrain them")
