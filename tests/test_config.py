"""Configs: docs per field, YAML + overrides, strict keys with suggestions, typed values, every recipe loads."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from alignkit import config as C
from alignkit.cli import main
from alignkit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CONFIG_CLASSES = [C.ModelConfig, C.DataConfig, C.OptimConfig, C.PeftConfig, C.TrainConfig,
                  C.CheckpointConfig, C.LogConfig, C.SFTConfig, C.CorpusConfig, C.TinyModelConfig,
                  C.PretrainConfig, C.WorldConfig, C.WorldEvalConfig, C.PipelineConfig, C.PreferenceDataConfig,
                  C.RewardNormConfig, C.RMConfig, C.RolloutConfig, C.KLConfig, C.PPOAlgoConfig, C.PPOConfig,
                  C.SelfInstructConfig, C.EndpointConfig]
REQUIRED = ["model.path=m", "data.train_path=d.jsonl"]


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda c: c.__name__)
def test_every_field_has_a_docstring(cls):
    docs = C.field_docs(cls)
    missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
    assert missing == []


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  path: m\ndata:\n  train_path: d.jsonl\noptim:\n  lr: 1e-4\n  schedule: linear\n")
    cfg = C.load_config(C.SFTConfig, path, ["optim.lr=3e-4", "train.batch_size=4", "peft.lora_target_modules=q_proj,v_proj"])
    assert cfg.optim.lr == pytest.approx(3e-4)  # override wins
    assert cfg.optim.schedule == "linear"  # file value kept
    assert cfg.train.batch_size == 4
    assert cfg.peft.lora_target_modules == ["q_proj", "v_proj"]
    assert cfg.data.max_length == C.DataConfig().max_length  # default kept


def test_unknown_key_in_file_names_line_and_closest_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  path: m\noptim:\n  lr: 1e-4\n  warmup_step: 10\n")
    with pytest.raises(ConfigError) as err:
        C.load_config(C.SFTConfig, path)
    assert str(err.value) == f"{path}, line 5: unknown key 'optim.warmup_step'; did you mean 'optim.warmup_steps'?"


def test_unknown_override_suggests_key():
    with pytest.raises(ConfigError, match=r"override 'optim.lrr=1': unknown key 'optim.lrr'; did you mean 'optim.lr'\?"):
        C.load_config(C.SFTConfig, None, REQUIRED + ["optim.lrr=1"])


def test_key_at_wrong_level_suggests_the_nested_one():
    with pytest.raises(ConfigError, match=r"unknown key 'lora_r'; did you mean 'peft.lora_r'\?"):
        C.load_config(C.SFTConfig, None, REQUIRED + ["lora_r=8"])


def test_wrong_type_names_key_and_expected_type():
    with pytest.raises(ConfigError, match=r"train.batch_size expects int, got 'many'"):
        C.load_config(C.SFTConfig, None, REQUIRED + ["train.batch_size=many"])


def test_choice_error_lists_choices_and_suggests():
    with pytest.raises(ConfigError, match=r"optim.schedule must be one of constant, linear, cosine; got 'cosin' \(did you mean 'cosine'\?\)"):
        C.load_config(C.SFTConfig, None, REQUIRED + ["optim.schedule=cosin"])


def test_yaml_on_off_read_as_choice():
    cfg = C.load_config(C.SFTConfig, None, REQUIRED + ["data.packing=off"])
    assert cfg.data.packing == "off"


def test_missing_required_fields():
    with pytest.raises(ConfigError, match="model.path is required"):
        C.load_config(C.SFTConfig, None, ["data.train_path=x"])
    with pytest.raises(ConfigError, match="data.train_path is required"):
        C.load_config(C.SFTConfig, None, ["model.path=x"])


def test_bad_yaml_names_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  path: m\n optim: [\n")
    with pytest.raises(ConfigError, match=rf"{path}, line \d+: not valid YAML"):
        C.load_config(C.SFTConfig, path)


def test_override_without_equals():
    with pytest.raises(ConfigError, match="must look like key=value"):
        C.load_config(C.SFTConfig, None, ["optim.lr"])


def test_sft_help_lists_fields(capsys):
    assert main(["sft", "--help"]) == 0
    out = capsys.readouterr().out
    for key in C.all_keys(C.SFTConfig):
        assert f"  {key} (" in out
    assert "Peak learning rate" in out


def test_help_shows_the_stages_own_defaults(capsys):
    """A section's default is the stage's, not the section class's: PPO trains at lr 1e-5 on 64
    prompts per device (OptimConfig alone says 2e-5, TrainConfig 8)."""
    assert main(["ppo", "--help"]) == 0
    out = capsys.readouterr().out
    assert "optim.lr (float, default 1e-05)" in out and "train.batch_size (int, default 64)" in out


def test_cli_prints_config_errors_without_traceback(capsys):
    assert main(["sft", "model.path=m", "data.train_path=d", "optim.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: override 'optim.lrr=1': unknown key") and "Traceback" not in err


def test_unknown_command_suggests(capsys):
    assert main(["sfft"]) == 2
    assert "did you mean 'sft'?" in capsys.readouterr().err


STAGE_CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if "accelerate" not in p.parts)  # launcher files apart


@pytest.mark.parametrize("path", STAGE_CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_config_loads_and_validates(path):
    stage = path.relative_to(ROOT / "configs").parts[0]
    if stage == "smollm2":  # one recipe per stage, named after it
        stage = path.stem
    cls = {"sft": C.SFTConfig, "pretrain": C.PretrainConfig, "rm": C.RMConfig, "ppo": C.PPOConfig, "dpo": C.DPOConfig,
           "grpo": C.GRPOConfig, "demo.yaml": C.PipelineConfig,
           "demo-full.yaml": C.PipelineConfig, "demo-rounds.yaml": C.PipelineConfig,
           "demo-correctness.yaml": C.PipelineConfig, "demo-rlvr.yaml": C.PipelineConfig,
           "demo-real.yaml": C.PipelineConfig, "demo-safe.yaml": C.PipelineConfig}[stage]
    cfg = C.load_config(cls, path)
    assert (cfg.run_dir if cls is C.PipelineConfig else cfg.output_dir).startswith("runs/")


def test_core_modules_import_without_heavy_engines():
    """config, data, losses and rl stay importable (and testable) without accelerate, datasets,
    transformers or peft: run in a fresh interpreter so other tests' imports do not count."""
    import subprocess
    import sys

    code = ("import sys, alignkit.config, alignkit.data, alignkit.losses, alignkit.rl; "
            "print(sorted(m for m in ('accelerate', 'datasets', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("override, message", [
    ("log.every=0", "log.every must be > 0, got 0"),
    ("train.eval_batch_size=0", "train.eval_batch_size must be > 0, got 0"),
    ("train.max_steps=-5", "train.max_steps must be >= 0, got -5"),
    ("optim.lr=-1", "optim.lr must be > 0, got -1.0"),
    ("checkpoint.keep_last=0", "checkpoint.keep_last must be > 0, got 0"),
    ("checkpoint.save_every=-1", "checkpoint.save_every must be >= 0, got -1"),
    ("optim.warmup_ratio=1.5", "optim.warmup_ratio must be in [0, 1], got 1.5"),
    ("peft.lora_r=0", "peft.lora_r must be > 0, got 0"),
    ("model.dtype=float16", "model.dtype=float16 with full training diverges without loss scaling"),
])
def test_values_that_would_fail_mid_run_are_rejected_at_load(override, message):
    with pytest.raises(ConfigError) as err:
        C.load_config(C.SFTConfig, None, REQUIRED + [override])
    assert message in str(err.value) and f"with overrides {' '.join(REQUIRED)} {override}" in str(err.value)


def test_section_given_a_scalar_names_the_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  path: m\noptim: 3\n")
    with pytest.raises(ConfigError, match=rf"{path}, line 3: 'optim' is a section and must be a mapping of keys, got 3"):
        C.load_config(C.SFTConfig, path)


def test_string_fields_keep_the_text_as_typed(tmp_path):
    cfg = C.load_config(C.SFTConfig, None, REQUIRED + ["output_dir=010", "data.split=no", "data.eval_path=2024-01-01"])
    assert (cfg.output_dir, cfg.data.split, cfg.data.eval_path) == ("010", "no", "2024-01-01")
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  path: 2024-01-01\ndata:\n  train_path: d.jsonl\n")
    assert C.load_config(C.SFTConfig, path).model.path == "2024-01-01"


def test_a_config_can_start_from_a_base_file(tmp_path):
    """`base:` loads another file first; this file's keys win, key by key, nested ones included."""
    (tmp_path / "a.yaml").write_text("output_dir: runs/a\noptim:\n  lr: 0.5\n  warmup_steps: 7\nmodel:\n  path: m\n"
                                     "data:\n  train_path: d.jsonl\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\noptim:\n  lr: 0.25\n")
    cfg = C.load_config(C.SFTConfig, tmp_path / "b.yaml", ["train.max_steps=3"])
    assert (cfg.output_dir, cfg.optim.lr, cfg.optim.warmup_steps, cfg.train.max_steps) == ("runs/a", 0.25, 7, 3)
    (tmp_path / "c.yaml").write_text("base: c.yaml\n")
    with pytest.raises(ConfigError, match="leads back to itself"):
        C.load_config(C.SFTConfig, tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="does not exist \\(the base of"):
        C.load_config(C.SFTConfig, tmp_path / "d.yaml")


def test_demo_full_extends_the_demo():
    demo = C.load_config(C.PipelineConfig, ROOT / "configs" / "demo.yaml")
    full = C.load_config(C.PipelineConfig, ROOT / "configs" / "demo-full.yaml")
    assert full.sft == demo.sft and full.dpo == demo.dpo and full.run_dir == "runs/demo-full"
    assert full.stages[-3:] == ["best-of-n", "distill", "eval"]
    right = C.load_config(C.PipelineConfig, ROOT / "configs" / "demo-correctness.yaml")
    assert right.sft == demo.sft and right.ppo == demo.ppo and right.world.correctness_prompts == 3000
    assert (right.rm.batch_by, right.rm.train.max_steps, right.rm.optim) == ("ranking", 400, demo.rm.optim)


def test_a_section_keeps_its_stage_defaults_for_keys_it_does_not_name(tmp_path):
    """DPO's optim defaults to lr 1e-6 (not OptimConfig's 2e-5): a YAML optim section that names only
    warmup_steps must keep it. Before, the section was rebuilt from OptimConfig's own defaults."""
    (tmp_path / "d.yaml").write_text("model:\n  path: m\ndata:\n  train_path: d.jsonl\noptim:\n  warmup_steps: 10\n")
    cfg = C.load_config(C.DPOConfig, tmp_path / "d.yaml")
    assert (cfg.optim.lr, cfg.optim.warmup_steps) == (1e-6, 10)
    (tmp_path / "p.yaml").write_text("rft:\n  data:\n    max_length: 64\n")
    pipe = C.load_config(C.PipelineConfig, tmp_path / "p.yaml")
    assert (pipe.rft.data.max_length, pipe.rft.train.max_steps, pipe.rft.optim.lr) == (64, 100, 1e-4)


def test_an_empty_section_in_a_child_file_keeps_the_base_section(tmp_path):
    (tmp_path / "base.yaml").write_text("dpo:\n  beta: 0.5\n  loss: ipo\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\ndpo:\n  # beta: 0.3\n")
    cfg = C.load_config(C.PipelineConfig, tmp_path / "child.yaml")
    assert (cfg.dpo.beta, cfg.dpo.loss) == (0.5, "ipo")


def test_a_key_given_twice_is_an_error(tmp_path):
    (tmp_path / "twice.yaml").write_text("output_dir: a\noptim:\n  lr: 0.1\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match=r"line 4: not valid YAML \(key 'lr' appears twice \(first on line 3\)\)"):
        C.load_config(C.SFTConfig, tmp_path / "twice.yaml")


def test_distill_teacher_must_be_a_stage_of_the_run():
    with pytest.raises(ConfigError, match="distill_teacher 'dpo' is not a stage of this run"):
        C.load_config(C.PipelineConfig, None, ["stages=[pretrain,sft,distill,eval]"])


@pytest.mark.parametrize("overrides, message", [
    (["stages=[pretrain,sft,rm,rounds,eval]"], "the rounds stage continues the reward model and PPO of this run; add ppo"),
    (["stages=[pretrain,sft,rm,ppo,rounds,eval]", "rounds.k=1"], "rounds.k must be at least 2"),
    (["stages=[pretrain,sft,rm,ppo,rounds,eval]", "rounds.prompts=0"], "rounds.prompts must be > 0"),
])
def test_ranking_round_settings_are_checked(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        C.load_config(C.PipelineConfig, ROOT / "configs" / "demo.yaml", overrides)


def test_a_separate_ppo_reference_is_refused_with_lora():
    with pytest.raises(ConfigError, match="reference_model with peft.method=lora"):
        C.load_config(C.PPOConfig, None, ["model.path=m", "rollout.prompts_path=p.jsonl", "reference_model=sft",
                                          "peft.method=lora"])
