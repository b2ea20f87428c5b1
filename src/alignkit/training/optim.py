"""AdamW with decoupled weight decay, and the learning-rate schedule as a pure function."""

from __future__ import annotations

import math

import torch
from torch import nn

from alignkit.config import OptimConfig
from alignkit.errors import ConfigError


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str, min_ratio: float = 0.0) -> float:
    """Multiplier of the peak LR for the optimizer step `step` (0-based).

    Linear warmup: (step + 1) / warmup for step < warmup, so the first step already moves.
    Then, with progress p = (step - warmup) / (total - warmup) in [0, 1]:
      constant: 1;  linear: 1 - (1 - m) p;  cosine: m + (1 - m) (1 + cos(pi p)) / 2.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    p = min(1.0, (step - warmup_steps) / span)
    if schedule == "linear":
        return 1.0 - (1.0 - min_ratio) * p
    if schedule == "cosine":
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))
    raise ValueError(f"unknown schedule '{schedule}'")


def warmup_steps(cfg: OptimConfig, total_steps: int) -> int:
    return cfg.warmup_steps if cfg.warmup_steps > 0 else int(round(cfg.warmup_ratio * total_steps))


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW (optim.name: torch's, or bitsandbytes' 8-bit) over trainable parameters; no weight decay
    on biases and norm weights (1-D tensors)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            # ZeRO-3 loads the weights partitioned (flat, empty here); ds_shape is the real shape
            (decay if len(getattr(p, "ds_shape", p.shape)) >= 2 else no_decay).append(p)
    groups = [{"params": params, "weight_decay": wd}
              for params, wd in ((decay, cfg.weight_decay), (no_decay, 0.0)) if params]
    if getattr(cfg, "name", "adamw") == "adamw_8bit":
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise ConfigError("optim.name=adamw_8bit needs bitsandbytes: pip install bitsandbytes") from None
        return bnb.optim.AdamW8bit(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    warm = warmup_steps(cfg, total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warm, cfg.schedule, cfg.min_lr_ratio)
    )
