"""Run-level plumbing every stage shares: the accelerator, the run directory, console output."""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from alignkit.config import to_yaml
from alignkit.errors import ConfigError

console = Console(stderr=True, highlight=False, soft_wrap=True)


def quiet_libraries() -> None:
    """Keep transformers/datasets chatter (weight-loading bars, hub notices) out of our progress output."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import transformers

    import huggingface_hub

    huggingface_hub.utils.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.utils.logging.disable_progress_bar()
    datasets.utils.logging.set_verbosity_error()
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    # bitsandbytes (imported by peft) warns on import, in every process, that an optional faster CPU
    # kernel package is missing; its fallback is exact, so the notice only alarms.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    # transformers' own deprecation notices about its internals (e.g. during a peft merge) say
    # nothing a user can act on.
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")


def make_accelerator(precision: str):
    """An accelerate Accelerator: DDP/FSDP/DeepSpeed come from `accelerate launch` and its config.

    Gradient accumulation is done by the stage itself (token-weighted, see losses.sequence_nll), so
    accelerate's own accumulation stays at 1.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    # Several stages can run in one process (the pipeline, tests) with different precisions; the
    # process group (PartialState) is kept, only the per-run settings are cleared.
    AcceleratorState._reset_state()
    # accelerate starts gloo for several CPU processes only when told cpu=True; with no GPU present
    # and a multi-process launch (torchrun / accelerate launch), that is the only sensible choice.
    ds_file = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "none")
    if ds_file not in ("none", "") and not ds_file.lstrip().startswith("{") and not Path(ds_file).is_file():
        raise ConfigError(f"the DeepSpeed config file {ds_file} (named by the accelerate config) does not exist here: "
                          f"a relative path is read from the directory you launch from ({Path.cwd()}); the shipped "
                          "configs expect the repository root")
    multi_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    launched = "LOCAL_RANK" in os.environ  # by torchrun / accelerate launch, even with one process
    if launched and not torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        # DeepSpeed on CPU: cpu=True would make accelerate skip DeepSpeed, and with no GPU accelerate
        # names no backend (and then counts one process); DeepSpeed's CPU accelerator talks gloo.
        from accelerate import PartialState

        PartialState(backend="gloo")
        multi_cpu = False
    if multi_cpu and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        # accelerate 1.15 switches to FSDP only on GPU-like devices (state.py): on CPU the launch
        # would otherwise run as DDP without a word.
        if int(os.environ.get("RANK", "0")) == 0:
            console.print("[yellow]FSDP needs GPUs: accelerate does not shard on CPU, so these processes run "
                          "as DDP over gloo (the same training, whole weights on every process)")
    return Accelerator(mixed_precision="bf16" if precision == "bf16" else "no", cpu=multi_cpu)


def end_processes() -> None:
    """Close the process group after a multi-process run: left to interpreter exit, gloo's threads
    can be torn down while still running, and a process then aborts after finishing its work."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def prepare_run_dir(output_dir: str | Path, cfg: Any, resume: bool, is_main: bool) -> Path:
    """Create the run directory and record the resolved config. Refuses what would mix two runs in
    one directory, overwrite or delete what alignkit did not write (the final save replaces
    output_dir/model), or resume with settings the checkpoint cannot honour."""
    if not str(output_dir).strip():
        raise ConfigError("output_dir is empty: name the directory the run writes to")
    run_dir = Path(output_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"output_dir {run_dir} is a file, not a directory")
    check_inputs_outside(cfg, run_dir)
    started = (run_dir / "metrics.jsonl").exists() or (run_dir / "checkpoints").exists()
    if started and not resume:
        raise ConfigError(f"{run_dir} already holds a run; set resume=true to continue it, or choose another output_dir")
    if not started and not resume and (run_dir / "model").exists():
        raise ConfigError(f"{run_dir / 'model'} already exists, and the run would replace it at the end: choose another "
                          "output_dir (or move that directory away)")
    if resume and started and not (run_dir / "model").is_dir():
        check_same_settings(cfg, run_dir)
    if is_main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.yaml").write_text(to_yaml(cfg))
        except OSError as exc:
            raise ConfigError(f"cannot write to output_dir {run_dir}: {exc.strerror or exc}") from None
    return run_dir


def check_inputs_outside(cfg: Any, run_dir: Path) -> None:
    """Refuse an input (a model, data file, reward model...) that is the run directory itself or lies
    in run_dir/model: the run writes there, and its final save replaces run_dir/model whole."""
    run, out_model = run_dir.resolve(), (run_dir / "model").resolve()

    def walk(node: Any, prefix: str) -> None:
        for f in dataclasses.fields(node):
            value, key = getattr(node, f.name), f"{prefix}{f.name}"
            if dataclasses.is_dataclass(value):
                walk(value, f"{key}.")
            elif isinstance(value, str) and value.strip() and f.name != "output_dir" and "\0" not in value:
                path = Path(value).resolve()
                if path == run or path == out_model or out_model in path.parents:
                    raise ConfigError(f"{key}={value} is inside output_dir {run_dir}, which this run writes (and whose "
                                      "model/ it replaces at the end): choose another output_dir")

    walk(cfg, "")


# Settings a resumed run may change: where and how often it logs and saves, how many steps in all
# (the schedule follows), and how the same global batch is split over processes (checked against
# the checkpoint when it loads).
RESUMABLE_CHANGES = ("output_dir", "resume", "log.", "checkpoint.", "train.max_steps", "train.epochs",
                     "train.eval_every", "train.eval_batch_size", "train.batch_size", "train.grad_accum")


def check_same_settings(cfg: Any, run_dir: Path) -> None:
    """Resuming restores the optimizer and schedule from the checkpoint, so a new learning rate,
    model or data would be silently ignored while config.yaml recorded it: refuse and name them."""
    import yaml

    recorded = run_dir / "config.yaml"
    if not recorded.is_file():
        return
    try:
        old = yaml.safe_load(recorded.read_text()) or {}
    except yaml.YAMLError:
        return
    new = yaml.safe_load(to_yaml(cfg))

    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(d, dict):
            return {prefix.rstrip("."): d}
        return {k: v for key, value in d.items() for k, v in flat(value, f"{prefix}{key}.").items()}

    before, after = flat(old), flat(new)
    changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k]
                     and not any(k == c or (c.endswith(".") and k.startswith(c)) for c in RESUMABLE_CHANGES))
    if changed:
        shown = ", ".join(f"{k} ({before[k]!r} -> {after[k]!r})"[:120] for k in changed[:5])
        raise ConfigError(f"resume=true in {run_dir}, but these settings differ from the run being resumed "
                          f"(its config.yaml): {shown}; the checkpoint's optimizer and schedule would override "
                          "them. Resume with the old settings, or start a new run in another output_dir")


def publish_data_report(accelerator: Any, report: Any, run_dir: Path) -> None:
    """What data loading kept and dropped, and why: on the console and in run_dir/data_report.json."""
    for line in report.lines():
        say(accelerator, f"data {line}")
    if accelerator.is_main_process:
        report.write(run_dir / "data_report.json")


def say(accelerator: Any, message: str) -> None:
    if accelerator.is_main_process:
        console.print(message)


def reduce_sum(accelerator: Any, *values: float | torch.Tensor) -> list[float]:
    """Sum scalars over all processes (one collective for all of them)."""
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=accelerator.device)
    if accelerator.num_processes > 1:
        t = accelerator.reduce(t, reduction="sum")
    return t.tolist()


def begin_stage(cfg: Any, stage: str) -> tuple[Any, Path, Path | None]:
    """What every training stage does first: quiet the libraries, make the accelerator (and refuse
    what its engine cannot do yet), check and record the run directory, seed. Returns (accelerator,
    run_dir, model_dir), model_dir None when resuming a run whose model is already complete (the
    stage then returns it as it is)."""
    from alignkit.training.engine import check_engine_supports
    from alignkit.training.seed import seed_everything

    quiet_libraries()
    accelerator = make_accelerator(cfg.train.precision)
    check_engine_supports(accelerator, stage, bool(cfg.checkpoint.save_every))
    run_dir = prepare_run_dir(cfg.output_dir, cfg, cfg.resume, accelerator.is_main_process)
    accelerator.wait_for_everyone()  # every process has checked the directory before any writes to it
    model_dir = run_dir / "model"
    if cfg.resume and model_dir.is_dir():
        say(accelerator, f"[green]{model_dir} is complete; nothing to resume")
        return accelerator, run_dir, None
    seed_everything(cfg.seed)
    return accelerator, run_dir, model_dir


def seed_per_process(accelerator: Any, seed: int) -> None:
    """After identical initialisation, give each process its own random stream (sampling, dropout),
    so several processes do not draw the same numbers. One process keeps its stream as it is."""
    if accelerator.num_processes > 1:
        from alignkit.training.seed import seed_everything

        seed_everything(seed + 1_000_003 * accelerator.process_index)
