"""Which weights train: all, all but the lower N blocks, LoRA adapters, or a tuned prefix (peft)."""

from __future__ import annotations

import logging

import torch
from torch import nn

from alignkit.config import PeftConfig
from alignkit.errors import ConfigError

log = logging.getLogger(__name__)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks: the longest ModuleList (model.layers, transformer.h, ...)."""
    best: nn.ModuleList | None = None
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and (best is None or len(module) > len(best)):
            best = module
    if best is None:
        raise ConfigError(f"cannot find the transformer blocks of {type(model).__name__} to freeze")
    return best


def freeze_lower_layers(model: nn.Module, n: int) -> list[str]:
    """Freeze the input embeddings and blocks [0, n); return the frozen parameter names.

    The head, the final norm and the upper blocks keep training. With tied input/output embeddings
    the head is the embedding matrix, so it stays frozen too (logged).
    """
    layers = decoder_layers(model)
    if not 0 <= n <= len(layers):
        raise ConfigError(f"peft.freeze_layers={n}, but the model has {len(layers)} blocks")
    frozen_modules = [model.get_input_embeddings(), *list(layers)[:n]]
    position = getattr(getattr(model, "transformer", None), "wpe", None)  # GPT-2 learned positions
    if position is not None:
        frozen_modules.append(position)
    frozen_ids = set()
    for module in frozen_modules:
        for p in module.parameters():
            p.requires_grad_(False)
            frozen_ids.add(id(p))
    out = model.get_output_embeddings()
    if out is not None and id(out.weight) in frozen_ids:
        log.warning("input and output embeddings are tied: the head stays frozen with the embeddings")
    return [name for name, p in model.named_parameters() if id(p) in frozen_ids]


def apply_peft(model: nn.Module, cfg: PeftConfig, task: str = "CAUSAL_LM") -> nn.Module:
    """Return the model ready to train as `cfg.method` says. `task` is peft's task type: CAUSAL_LM,
    or SEQ_CLS for reward models (peft then also trains the fresh score head in full)."""
    if cfg.method == "full":
        if cfg.freeze_layers:
            freeze_lower_layers(model, cfg.freeze_layers)
        return model
    from peft import LoraConfig, PrefixTuningConfig, TaskType, get_peft_model

    if cfg.method == "lora":
        targets = cfg.lora_target_modules
        target = "all-linear" if targets == ["all-linear"] else targets
        peft_cfg = LoraConfig(task_type=TaskType[task], r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                              lora_dropout=cfg.lora_dropout, target_modules=target)
    else:
        peft_cfg = PrefixTuningConfig(task_type=TaskType[task], num_virtual_tokens=cfg.prefix_tokens)
    try:
        return get_peft_model(model, peft_cfg)
    except ValueError as exc:
        raise ConfigError(f"peft.{cfg.method}: {exc}") from None


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        n = getattr(p, "ds_numel", None) or p.numel()  # a ZeRO-3 partitioned parameter holds 0 elements here
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


def merge_adapter(adapter_dir: str, out_dir: str, dtype: str = "float32") -> str:
    """Fold a LoRA adapter into its base weights (W + (alpha/r) B A) and save a plain HF model."""
    from alignkit.models.loading import is_adapter_dir, load_causal_lm, load_tokenizer

    if not is_adapter_dir(adapter_dir):
        raise ConfigError(f"'{adapter_dir}' is not an adapter directory (no adapter_config.json)")
    model = load_causal_lm(adapter_dir, dtype)
    if model.peft_config[model.active_adapter].peft_type.value != "LORA":
        raise ConfigError(f"'{adapter_dir}' holds a {model.peft_config[model.active_adapter].peft_type.value} "
                          "adapter; only LoRA adapters fold into the base weights")
    merged = model.merge_and_unload()
    merged.save_pretrained(out_dir, safe_serialization=True)
    load_tokenizer(adapter_dir).save_pretrained(out_dir)
    return out_dir


def convert_model(src: str, out_dir: str, dtype: str = "float32") -> str:
    """Any model alignkit loads (an HF directory, a .gguf file, dequantised, or a LoRA adapter, merged)
    written as a plain Hugging Face directory: safetensors weights, config, tokenizer with its chat
    template. Written atomically (save_final_model)."""
    from alignkit.models.loading import is_adapter_dir, load_causal_lm, load_tokenizer
    from alignkit.models.saving import save_final_model

    if is_adapter_dir(src):
        return merge_adapter(src, out_dir, dtype)
    model = load_causal_lm(src, dtype)
    save_final_model(model, load_tokenizer(src), out_dir)
    return out_dir


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters by name: what a checkpoint must hold to restore training."""
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}
