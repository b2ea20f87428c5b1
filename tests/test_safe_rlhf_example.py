"""examples/safe_rlhf.py: every variant's overrides resolve to a valid PPO config on demo-safe's settings."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _example():
    spec = importlib.util.spec_from_file_location("safe_rlhf_example", ROOT / "examples" / "safe_rlhf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_variant_builds_a_valid_config(tmp_path):
    """A misspelt override key would otherwise surface only after the pipeline's hour of training."""
    ex = _example()
    config = str(ROOT / "configs" / "demo-safe.yaml")
    for name in ex.VARIANTS:
        cfg = ex.variant_config(config, tmp_path, name, tmp_path / "cost", tmp_path / "out")
        assert cfg.safety.cost_model == str(tmp_path / "cost") and cfg.model.path == str(tmp_path / "sft" / "model")
    ptx = ex.variant_config(config, tmp_path, "safe rlhf, no unsafe answers, ptx", tmp_path / "cost", tmp_path / "o")
    assert ptx.ppo.ptx_coef == 1.0 and ptx.ppo.ptx_path == str(tmp_path / "world" / "sft.jsonl")  # {world} filled in
    assert (ptx.safety.multiplier, ptx.safety.cost_limit, ptx.safety.unsafe_only) == ("lagrange", 0.0, True)
    control = ex.variant_config(config, tmp_path, "ppo + ptx", tmp_path / "cost", tmp_path / "o")
    assert (control.safety.multiplier, control.safety.lambda_init, control.ppo.ptx_coef) == ("fixed", 0.0, 1.0)
    assert set(ex.DEFAULT_VARIANTS) <= set(ex.VARIANTS)
