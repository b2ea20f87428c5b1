"""What differs between the engines accelerate runs a stage on (one process, DDP, DeepSpeed ZeRO 1-3,
FSDP), kept in one place so that every training loop reads the same under all of them.

The engine is chosen at launch (`accelerate launch --config_file configs/accelerate/...`); alignkit
never builds its own parallelism. The shared step loop (training/loop.py; PPO has its own) calls,
per optimizer step:

    for k, micro in enumerate(micro_batches):
        with micro_batch(accelerator, model, last=k == len(micro_batches) - 1):
            backward(accelerator, loss)      # loss already normalised over the whole global batch
    optimizer_step(...)                      # training/loop.py: divergence check, clip, step, schedule

The differences this module absorbs, and why:
- DeepSpeed steps its optimizer inside `backward` of the last micro-batch, so it must know the micro
  batch, the accumulation and the clipping: `prepare` writes them into its config from the stage's own
  (`"auto"` in the file) and refuses a file that disagrees. It also divides every loss by the
  accumulation count; our losses are already normalised, so that division is switched off.
- Under ZeRO-3 (and FSDP) the weights are partitioned: saving gathers them (`gathered_parameters`),
  and every forward pass is a collective, so all processes must make the same number of passes
  (`lockstep`), or one would wait forever for the others.
- Resumable checkpoints: under DDP every process holds the whole state, so the main process writes
  it in alignkit's own safetensors format, which any number of processes can resume. DeepSpeed holds
  the optimizer in per-process partitions: the engine writes its own checkpoint (its format, one
  file per process). On the same process count it loads as it is; on another, ZeRO-1/2 ones are
  converted by DeepSpeed's universal-checkpoint tool first, ZeRO-3 ones are refused.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator

import torch

from alignkit.errors import ConfigError


def engine_name(accelerator: Any) -> str:
    """'deepspeed', 'fsdp', 'ddp' or 'single': what the metrics and messages call the engine."""
    kind = str(accelerator.distributed_type).split(".")[-1]
    if kind == "DEEPSPEED":
        return "deepspeed"
    if kind == "FSDP":
        return "fsdp"
    return "ddp" if accelerator.num_processes > 1 else "single"


def zero_stage(accelerator: Any) -> int:
    """DeepSpeed's ZeRO stage, 0 when the engine is not DeepSpeed."""
    if engine_name(accelerator) != "deepspeed":
        return 0
    return int(accelerator.state.deepspeed_plugin.zero_stage)


def partitioned(accelerator: Any) -> bool:
    """True when no process holds all the weights (ZeRO-3, FSDP): forward passes are collectives."""
    return zero_stage(accelerator) == 3 or engine_name(accelerator) == "fsdp"


def engine_dtype(accelerator: Any) -> torch.dtype | None:
    """The dtype DeepSpeed casts the trained model to (bf16/fp16 enabled in its config), else None.
    DeepSpeed does not autocast: frozen models that are compared with the trained one (a reference,
    a teacher) are cast to it, or the first KL and the first DPO loss would not start at 0 and ln 2."""
    if engine_name(accelerator) != "deepspeed":
        return None
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    for key, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        if config.get(key, {}).get("enabled") is True:
            return dtype
    return None


def frozen_reward_model(accelerator: Any, path: str, device: str | None = None) -> tuple[Any, float, Any]:
    """(reward model, its offset, its tokenizer) from an `alignkit rm` directory, frozen beside the
    engine (or on `device`), for the stages that score samples with it (PPO, GRPO)."""
    from alignkit.models import load_tokenizer
    from alignkit.models.reward import RewardModel, load_reward_backbone, reward_offset_of

    model = load_frozen(accelerator, lambda: RewardModel(load_reward_backbone(path, trained=True)), device, cast=False)
    return model, reward_offset_of(path), load_tokenizer(path)


def like_engine(accelerator: Any, frozen: Any) -> Any:
    """A frozen model compared with the trained one, cast to DeepSpeed's dtype when it has one."""
    dtype = engine_dtype(accelerator)
    return frozen.to(dtype) if dtype else frozen


def load_frozen(accelerator: Any, load: Any, device: Any = None, cast: bool = True) -> Any:
    """A model that stays out of the engine (a reference, a reward model, a teacher): loaded by
    `load()` whole on this process (see whole_models), without gradients, in eval mode, on `device`
    (this process's by default); with `cast`, in the dtype DeepSpeed trains the policy in, so that the
    two compare like with like (not when it is kept on another device)."""
    with whole_models():
        model = load()
    model = model.requires_grad_(False).eval().to(device or accelerator.device)
    return like_engine(accelerator, model) if cast and not device else model


# What DeepSpeed must be told, from which of the stage's settings.
DEEPSPEED_FROM_CONFIG = {
    "train_micro_batch_size_per_gpu": "train.batch_size",
    "gradient_accumulation_steps": "train.grad_accum",
    "gradient_clipping": "optim.max_grad_norm",
}


def deepspeed_settings(ds_config: dict[str, Any], values: dict[str, float], processes: int) -> dict[str, Any]:
    """The DeepSpeed config with the micro batch, accumulation and clipping filled in from the stage's
    own settings (`values`, keyed like DEEPSPEED_FROM_CONFIG). A value the file leaves out or sets to
    "auto" is filled; one that disagrees is an error, since two sources for one number would train
    a different run than the YAML says. DeepSpeed's own optimizer and scheduler are refused: alignkit
    builds them from the `optim` section, the same under every engine."""
    out = dict(ds_config)
    for key, ours in DEEPSPEED_FROM_CONFIG.items():
        have = out.get(key, "auto")
        if have == "auto":
            out[key] = values[key]
        elif float(have) != float(values[key]):
            raise ConfigError(f"the DeepSpeed config sets {key}={have} but {ours}={values[key]}: set it to \"auto\" "
                              f"(alignkit fills it from {ours}) or make the two agree")
    total = values["train_micro_batch_size_per_gpu"] * values["gradient_accumulation_steps"] * processes
    if out.get("train_batch_size", "auto") not in ("auto", total):
        raise ConfigError(f"the DeepSpeed config sets train_batch_size={out['train_batch_size']} but train.batch_size x "
                          f"train.grad_accum x {processes} processes is {total}: set it to \"auto\"")
    out["train_batch_size"] = total
    for key in ("optimizer", "scheduler"):
        if key in out:
            raise ConfigError(f"the DeepSpeed config has a \"{key}\" section: remove it; alignkit builds the optimizer "
                              "and its schedule from the stage's optim section under every engine")
    out.setdefault("steps_per_print", 2**31 - 1)  # alignkit logs its own metrics
    if out.get("zero_optimization", {}).get("stage") == 3:
        # the final model is consolidated layer by layer on the main process (accelerate's
        # get_state_dict), not gathered whole on every process
        out["zero_optimization"] = {"stage3_gather_16bit_weights_on_model_save": True, **out["zero_optimization"]}
    return out


def prepare(accelerator: Any, model: Any, optimizer: Any, *, batch_size: int, grad_accum: int,
            max_grad_norm: float) -> tuple[Any, Any]:
    """accelerator.prepare(model, optimizer), with DeepSpeed told the stage's batch geometry first.
    The schedule is not handed to the engine: the loops step it themselves, once per optimizer step."""
    if engine_name(accelerator) == "deepspeed":
        plugin = accelerator.state.deepspeed_plugin
        # The file as the user wrote it, kept for the next stage in this process (the pipeline): the
        # engine's config is filled in place.
        if not hasattr(plugin, "alignkit_file_config"):
            plugin.alignkit_file_config = json.loads(json.dumps(plugin.deepspeed_config))
        values = {"train_micro_batch_size_per_gpu": batch_size, "gradient_accumulation_steps": grad_accum,
                  "gradient_clipping": max_grad_norm}
        filled = deepspeed_settings(plugin.alignkit_file_config, values, accelerator.num_processes)
        plugin.deepspeed_config.clear()
        plugin.deepspeed_config.update(filled)
    return accelerator.prepare(model, optimizer)


@contextmanager
def micro_batch(accelerator: Any, model: Any, last: bool) -> Iterator[None]:
    """One micro-batch's forward and backward. Gradients are averaged across processes only at the
    last one (DDP's no_sync before it); DeepSpeed takes `sync_gradients` as its accumulation
    boundary and steps its optimizer in that backward."""
    accelerator.sync_gradients = last
    try:
        with (nullcontext() if last else accelerator.no_sync(model)), accelerator.autocast():
            yield
    finally:
        accelerator.sync_gradients = True


def backward(accelerator: Any, loss: torch.Tensor) -> None:
    """Backward of a loss that is already normalised over the global batch (and multiplied by the
    process count, since every engine averages gradients across processes)."""
    if engine_name(accelerator) == "deepspeed":
        # DeepSpeed would divide by the accumulation count once more.
        accelerator.backward(loss, scale_wrt_gas=False)
    else:
        accelerator.backward(loss)


@contextmanager
def gathered_parameters(accelerator: Any, model: Any) -> Iterator[None]:
    """Inside, every parameter of `model` is whole on every process (ZeRO-3 partitions them); all
    processes must enter. Read-only: changes made inside are not kept."""
    if zero_stage(accelerator) == 3:
        import deepspeed

        if hasattr(model, "empty_partition_cache"):
            # The engine: let go of parameters it prefetched for the last forward pass first (they
            # are "in flight", and gathering would then fail to partition them again).
            model.empty_partition_cache()
        params = list(accelerator.unwrap_model(model).parameters())
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            yield
    else:
        yield


@contextmanager
def whole_models() -> Iterator[None]:
    """Models loaded inside stay whole on this process, and their `generate` runs on its own. Under
    ZeRO-3, transformers partitions every model it loads and makes every process generate in step
    with the others (collectives all must join); the models that stay out of the engine (a frozen
    reference or teacher, a reward model, a policy sampled for normalisation) need neither."""
    from transformers.integrations import deepspeed as hf_deepspeed

    ref = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = ref


def lockstep(items: list, rank: int, world: int, batch_size: int) -> Iterator[tuple[list, bool]]:
    """This process's strided share of `items`, in batches, as (batch, real). With several processes
    a forward pass may be a collective (under ZeRO-3 every one gathers weights; a DDP-wrapped model
    with buffers broadcasts them), so a process with fewer batches than the others repeats its first
    one with real=False (to be run and ignored) until all have made the same number of passes."""
    mine = items[rank::world]
    batches = [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]
    if world > 1:
        most = -(-(-(-len(items) // world)) // batch_size)  # ceil(ceil(n / world) / batch_size)
        filler = (batches or [items[:1]])[0]
        batches += [None] * (most - len(batches))
        for batch in batches:
            yield (filler, False) if batch is None else (batch, True)
        return
    for batch in batches:
        yield batch, True


# ------------------------------------------------------------------------------------------------
# Resumable checkpoints under every engine


def save_engine_checkpoint(root: Path, step: int, accelerator: Any, model: Any, state: dict[str, Any],
                           rng_files: dict[str, dict[str, torch.Tensor]], keep_last: int) -> Path:
    """DeepSpeed's own checkpoint (every process writes its partition) in checkpoints/step-<step>,
    with alignkit's state.json written last and the directory renamed into place, so an interrupted
    save leaves no directory that looks complete. A collective: every process calls it."""
    from safetensors.torch import save_file

    from alignkit.training.checkpoint import publish

    final = root / f"step-{step:06d}"
    tmp = root / f".step-{step:06d}.tmp"  # one name for all processes: they write into one directory
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    model.save_checkpoint(str(tmp), tag="engine", save_latest=False)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        for name, tensors in rng_files.items():
            save_file(tensors, str(tmp / name))
        publish(tmp, final, state, keep_last)
    accelerator.wait_for_everyone()
    return final


def load_engine_checkpoint(path: Path, accelerator: Any, model: Any, saved_processes: int) -> None:
    """Restore DeepSpeed's weights and optimizer partitions (a collective). Written by another number
    of processes, the checkpoint is first converted by DeepSpeed's own tool into its universal
    format (whole tensors per parameter, kept beside the original), which any count can load."""
    if saved_processes == accelerator.num_processes:
        loaded, _ = model.load_checkpoint(str(path), tag="engine", load_optimizer_states=True,
                                          load_lr_scheduler_states=False)
        if loaded is None:
            raise ConfigError(f"{path}: DeepSpeed found no checkpoint to load in {path / 'engine'}")
        return
    if zero_stage(accelerator) == 3:
        # Measured with deepspeed 0.19.8: a ZeRO-3 checkpoint converted this way reloads its weights
        # but not its optimizer state exactly (the run drifts from the uninterrupted one); ZeRO-1/2
        # resume exactly.
        raise ConfigError(f"{path} holds ZeRO-3 partitions for {saved_processes} processes and this run has "
                          f"{accelerator.num_processes}: ZeRO-3 resumes on the same number of processes (ZeRO-1 "
                          "and ZeRO-2 checkpoints can change it)")
    universal = path / "universal"
    failure = [""]
    if accelerator.is_main_process and not universal.is_dir():
        import subprocess
        import sys

        tmp = path / ".universal.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        proc = subprocess.run([sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder",
                               str(path / "engine"), "--output_folder", str(tmp), "--inject_missing_state"],
                              capture_output=True, text=True)
        if proc.returncode == 0:
            os.replace(tmp, universal)
        else:
            failure = [proc.stderr.strip()[-500:] or "no message"]
    if accelerator.num_processes > 1:  # every process learns the outcome: none may wait for a failed one
        from accelerate.utils import broadcast_object_list

        failure = broadcast_object_list(failure)
    if failure[0]:
        raise ConfigError(f"{path}: DeepSpeed could not convert this checkpoint from {saved_processes} to "
                          f"{accelerator.num_processes} processes: {failure[0]}")
    model._config.load_universal_checkpoint = True  # DeepSpeed reads the format from its config at load
    try:
        loaded, _ = model.load_checkpoint(str(path), tag="universal", load_optimizer_states=True,
                                          load_lr_scheduler_states=False)
        if loaded is None:
            raise ConfigError(f"{path}: DeepSpeed found no checkpoint to load in {universal}")
    finally:
        model._config.load_universal_checkpoint = False


# Stages whose saving goes beyond one model's weights (the reward model merges and normalises, PPO
# saves a policy out of a policy-and-critic module): not written for FSDP's shards yet.
FSDP_READY = {"sft", "pretrain", "dpo", "distill"}


def check_engine_supports(accelerator: Any, stage: str, checkpoints: bool) -> None:
    """Refuse, before any work, what an engine cannot do yet, with what to use instead."""
    if engine_name(accelerator) != "fsdp":
        return
    if stage not in FSDP_READY:
        raise ConfigError(f"{stage} does not run under FSDP yet: use DeepSpeed ZeRO-3 "
                          "(configs/accelerate/8gpu-zero3.yaml), which shards the same state")
    if checkpoints:
        raise ConfigError("resumable checkpoints are not written under FSDP yet: set checkpoint.save_every=0, or use "
                          "DeepSpeed ZeRO-3 (configs/accelerate/8gpu-zero3.yaml)")


def save_resumable(run_dir: Path, step: int, accelerator: Any, model: Any, optimizer: Any, scheduler: Any, *,
                   keep_last: int, global_batch: int, extra: dict[str, Any] | None = None) -> Path | None:
    """Everything needed to resume at `step` (a collective: every process calls it). The state
    records the engine, the process count and the global batch, which decide where it can resume."""
    from alignkit.training.checkpoint import save_checkpoint
    from alignkit.training.seed import gather_rng, rng_state

    rngs = gather_rng(accelerator) or [rng_state()]
    layout = {"engine": engine_name(accelerator), "processes": accelerator.num_processes,
              "global_batch": global_batch, "zero_stage": zero_stage(accelerator)}
    if engine_name(accelerator) == "deepspeed":
        state = {"step": step, "scheduler": scheduler.state_dict(), "rng": rngs[0][1],
                 "rng_ranks": [meta for _, meta in rngs[1:]], "extra": extra or {}, **layout}
        files = {"rng.safetensors": rngs[0][0]}
        files.update({f"rng-rank{r}.safetensors": t for r, (t, _) in enumerate(rngs) if r})
        return save_engine_checkpoint(Path(run_dir) / "checkpoints", step, accelerator, model, state, files, keep_last)
    path = None
    if accelerator.is_main_process:
        path = save_checkpoint(run_dir, step, accelerator.unwrap_model(model), optimizer, scheduler,
                               extra={**(extra or {}), "layout": layout}, keep_last=keep_last,
                               rank_rngs=rngs if accelerator.num_processes > 1 else None)
    accelerator.wait_for_everyone()
    return path


def check_layout(path: Path, saved: dict[str, Any], accelerator: Any, global_batch: int) -> None:
    """Refuse a resume that could not continue the saved run exactly, saying what would."""
    engine, processes = engine_name(accelerator), accelerator.num_processes
    if engine == "fsdp":
        raise ConfigError(f"{path}: resuming under FSDP is not supported yet; resume under the engine that wrote it")
    if not saved:  # written before checkpoints recorded their layout: by one process or DDP
        if engine == "deepspeed":
            raise ConfigError(f"{path} was written without DeepSpeed (alignkit's own format): resume it without "
                              "DeepSpeed")
        return
    was_ds, is_ds = saved["engine"] == "deepspeed", engine == "deepspeed"
    if was_ds != is_ds:
        raise ConfigError(f"{path} was written by {saved['engine']} and this run uses {engine}: resume it under the "
                          "engine that wrote it")
    if is_ds and saved.get("zero_stage", zero_stage(accelerator)) != zero_stage(accelerator):
        raise ConfigError(f"{path} was written under ZeRO-{saved['zero_stage']} and this run uses "
                          f"ZeRO-{zero_stage(accelerator)}: resume it under the stage that wrote it")
    if saved["global_batch"] != global_batch:
        hint = ""
        per_step = global_batch // max(processes, 1)
        if saved["global_batch"] % processes == 0:
            hint = (f"; with {processes} processes, choose train.batch_size x train.grad_accum = "
                    f"{saved['global_batch'] // processes}")
        raise ConfigError(f"{path} was written with a global batch of {saved['global_batch']} rows per step "
                          f"({saved['processes']} processes) and this run's is {global_batch} ({processes} x "
                          f"{per_step}): the data order and the schedule are counted in steps of the saved "
                          f"batch{hint}")


def load_resumable(path: Path, accelerator: Any, model: Any, optimizer: Any, scheduler: Any,
                   global_batch: int) -> dict[str, Any]:
    """Restore a checkpoint written by save_resumable (a collective); returns its state.json."""
    from safetensors.torch import load_file

    from alignkit.training.checkpoint import load_checkpoint
    from alignkit.training.seed import seed_everything, set_rng_state

    state = json.loads((path / "state.json").read_text())
    layout = state.get("extra", {}).pop("layout", None) or {k: state[k] for k in ("engine", "processes",
                                                                                  "global_batch") if k in state}
    check_layout(path, layout, accelerator, global_batch)
    rank = accelerator.process_index
    if engine_name(accelerator) == "deepspeed":
        load_engine_checkpoint(path, accelerator, model, layout["processes"])
        scheduler.load_state_dict(state["scheduler"])
        if rank == 0:
            set_rng_state(load_file(str(path / "rng.safetensors")), state["rng"])
        elif rank < layout["processes"]:
            set_rng_state(load_file(str(path / f"rng-rank{rank}.safetensors")), state["rng_ranks"][rank - 1])
        else:
            seed_everything(state["step"] * 1_000_003 + rank)  # a process the saved run did not have
        return state
    state = load_checkpoint(path, accelerator.unwrap_model(model), optimizer, scheduler, rank)
    state["extra"].pop("layout", None)
    if layout and rank >= layout["processes"]:
        # More processes than wrote the checkpoint: this one has no saved random stream of its own;
        # give it a distinct one (sampling must not repeat another process's).
        seed_everything(state["step"] * 1_000_003 + rank)
    return state
