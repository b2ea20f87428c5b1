"""A finished model written as a standard Hugging Face directory, atomically."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from torch import nn

from alignkit.errors import write_failure
from alignkit.models.loading import is_hub_id


def save_final_model(model: nn.Module, tokenizer: Any, out_dir: str | Path, base_model_path: str | None = None,
                     extra_files: dict[str, str] | None = None, state_dict: dict[str, Any] | None = None) -> Path:
    """Save a standard HF directory (safetensors) atomically; a peft model saves its adapter.

    An adapter records the absolute path of its base model, so `alignkit merge`, `alignkit chat` and
    later stages find the base without being told.
    """
    out = Path(out_dir)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    if hasattr(model, "peft_config") and base_model_path:
        for cfg in model.peft_config.values():
            # A hub id stays an id (resolved again through the hub cache); a local path becomes absolute.
            cfg.base_model_name_or_path = base_model_path if is_hub_id(base_model_path) else \
                str(Path(base_model_path).resolve())
    try:
        # state_dict: the whole weights when the model itself holds shards (FSDP)
        model.save_pretrained(tmp, safe_serialization=True, **({"state_dict": state_dict} if state_dict else {}))
        tokenizer.save_pretrained(tmp)
        for name, text in (extra_files or {}).items():  # e.g. a reward model's normalisation
            (tmp / name).write_text(text)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # no half-written model left beside the run
        raise write_failure(out, exc) from None
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
