"""Resumable checkpoints: safetensors only, written atomically (temporary directory, then rename).

checkpoints/step-000120/
  model.safetensors      trainable parameters (all of them in full fine-tuning, the adapter in LoRA)
  optimizer.safetensors  optimizer state tensors, keyed state.<param index>.<name>
  rng.safetensors        torch / numpy generator states
  state.json             step, optimizer param groups, scheduler state, python RNG, stage extras

A directory without state.json is incomplete and ignored; the rename makes one appear whole or not
at all, so a run killed mid-save resumes from the previous checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from alignkit.errors import AlignkitError, write_failure
from alignkit.training.seed import rng_state, set_rng_state

STEP_DIR = re.compile(r"^step-(\d+)$")


def _optimizer_to_safe(opt_state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors to safetensors, the rest to JSON. A nested dict in a parameter's state (bitsandbytes
    keeps its 8-bit state in one) is flattened with '/' in the name."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    seen: set[int] = set()

    def put(idx: Any, name: str, value: Any) -> None:
        if isinstance(value, dict):
            for sub, inner in value.items():
                put(idx, f"{name}/{sub}", inner)
        elif isinstance(value, torch.Tensor):
            value = value.detach().cpu().contiguous()
            if value.data_ptr() in seen:  # bitsandbytes shares its quantisation maps; safetensors refuses that
                value = value.clone()
            seen.add(value.data_ptr())
            tensors[f"state.{idx}.{name}"] = value
        else:
            scalars[f"{idx}.{name}"] = value

    for idx, state in opt_state["state"].items():
        for name, value in state.items():
            put(idx, name, value)
    return tensors, {"param_groups": opt_state["param_groups"], "scalars": scalars}


def _optimizer_from_safe(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}

    def put(idx: str, name: str, value: Any) -> None:
        node = state.setdefault(int(idx), {})
        *outer, last = name.split("/")
        for part in outer:
            node = node.setdefault(part, {})
        node[last] = value

    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        put(idx, name, value)
    for key, value in meta["scalars"].items():
        idx, name = key.split(".", 1)
        put(idx, name, value)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(run_dir: str | Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, extra: dict[str, Any] | None = None, keep_last: int = 2,
                    rank_rngs: list[tuple[dict[str, torch.Tensor], dict[str, Any]]] | None = None) -> Path:
    """Write checkpoints/step-<step> atomically and delete all but the newest `keep_last`.

    rank_rngs: every process's random state (index = rank), from `gather_rng`, so that each process
    of a multi-process run resumes its own sampling; None saves this process's state only."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".step-{step:06d}.tmp-{os.getpid()}"
    remove_stale_temporaries(root)
    tmp.mkdir()
    try:
        params = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(params, str(tmp / "model.safetensors"))
        opt_tensors, opt_meta = _optimizer_to_safe(optimizer.state_dict())
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        rng_tensors, rng_meta = rank_rngs[0] if rank_rngs else rng_state()
        save_file(rng_tensors, str(tmp / "rng.safetensors"))
        for rank, (tensors, _) in enumerate(rank_rngs or []):
            if rank:
                save_file(tensors, str(tmp / f"rng-rank{rank}.safetensors"))
        state = {"step": step, "optimizer": opt_meta, "scheduler": scheduler.state_dict() if scheduler else None,
                 "rng": rng_meta, "rng_ranks": [meta for _, meta in (rank_rngs or [])[1:]], "extra": extra or {}}
        return publish(tmp, final, state, keep_last)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk must not also leave a model-sized leftover
        raise write_failure(final, exc) from None


def remove_stale_temporaries(root: Path) -> None:
    """Delete half-written checkpoints (.step-N.tmp-PID) of processes that died while writing; each is
    the size of the model and its optimizer state. Only one process writes a run's checkpoints."""
    for stale in root.glob(".step-*.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def fsync_tree(path: Path) -> None:
    """Every file in `path`, and `path` itself, flushed to disk: a crash after the rename then finds
    the checkpoint's contents, not empty files under a complete-looking name."""
    for f in path.iterdir():
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fsync_dir(path)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, final: Path, state: dict[str, Any], keep_last: int) -> Path:
    """Finish a checkpoint written into `tmp`: state.json last (flushed to disk), then one rename makes
    it appear whole as `final`; all but the newest `keep_last` complete checkpoints are deleted."""
    with open(tmp / "state.json", "w") as fh:
        json.dump(state, fh)
    fsync_tree(tmp)  # the tensors too, not only state.json
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(final.parent)  # the rename itself
    for old in list_checkpoints(final.parent.parent)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old)
    return final


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if STEP_DIR.match(p.name) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    rank: int = 0) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and RNG (process `rank`'s own, when the checkpoint has
    one) from a checkpoint; return its state.json."""
    path = Path(path)
    state = json.loads((path / "state.json").read_text())
    params = load_file(str(path / "model.safetensors"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(params) != trainable:
        missing, unexpected = sorted(trainable - set(params)), sorted(set(params) - trainable)
        raise AlignkitError(
            f"{path}: checkpoint does not match the model being trained (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}); was it written with another peft setting?"
        )
    with torch.no_grad():
        named = dict(model.named_parameters())
        for name, value in params.items():
            named[name].copy_(value)
    optimizer.load_state_dict(_optimizer_from_safe(load_file(str(path / "optimizer.safetensors")), state["optimizer"]))
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    own = path / f"rng-rank{rank}.safetensors"
    if rank and own.is_file() and len(state.get("rng_ranks", [])) >= rank:
        set_rng_state(load_file(str(own)), state["rng_ranks"][rank - 1])
    else:
        set_rng_state(load_file(str(path / "rng.safetensors")), state["rng"])
    return state
