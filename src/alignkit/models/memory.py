"""Memory levers for models that do not fit: gradient checkpointing on every Hugging Face model
inside a trained module (a policy, a PPO policy-and-critic, a reward model, a student)."""

from __future__ import annotations

from typing import Any

from torch import nn


def hf_models(module: nn.Module) -> list[Any]:
    """The outermost Hugging Face models in `module` (itself, or those its wrappers hold)."""
    from transformers import PreTrainedModel

    found: list[Any] = []

    def walk(m: nn.Module) -> None:
        if isinstance(m, PreTrainedModel):
            found.append(m)
            return
        for child in m.children():
            walk(child)

    walk(module)
    return found


def enable_gradient_checkpointing(module: nn.Module) -> int:
    """Recompute each layer's activations in the backward pass instead of keeping them (less memory,
    about a third more compute). Non-reentrant checkpointing: it needs no input that requires grad
    (so frozen embeddings under LoRA are fine) and gives the same gradients. The cache is off in
    training with it (generation in eval mode keeps its cache). Returns how many models took it."""
    count = 0
    for model in hf_models(module):
        if getattr(model, "supports_gradient_checkpointing", False):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False
            count += 1
    return count
