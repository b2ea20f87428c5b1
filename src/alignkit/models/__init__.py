"""Models: local loading (HF dirs, adapters, GGUF), PEFT and layer freezing, tiny models for tests."""

from alignkit.models.adapters import apply_peft, count_parameters, freeze_lower_layers, merge_adapter
from alignkit.models.loading import load_causal_lm, load_tokenizer
from alignkit.models.tiny import build_tiny_model

__all__ = ["apply_peft", "build_tiny_model", "count_parameters", "freeze_lower_layers", "load_causal_lm",
           "load_tokenizer", "merge_adapter"]
