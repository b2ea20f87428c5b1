"""Stage configs: small dataclasses built from shared parts, loaded from YAML with key=value overrides.

loader   the general YAML-to-dataclass loader (load_config, read_yaml, overrides, --help)
parts    the shared parts (model, data, optim, peft, train, checkpoint, log) and their checks
stages   the stage configs; ppo: PPO's; grpo: the critic-free RL stage's
data     the data commands that run a model (Self-Instruct)
demo     the demo pipeline's configs (the world, rounds, the pipeline)

Everything is re-exported here, so `from alignkit.config import SFTConfig, load_config` keeps working.
"""

from alignkit.config.loader import (all_keys, describe, field_docs, from_dict, load_config, missing_paths, parse_override,
                                    read_yaml, to_dict, to_yaml, with_defaults, yaml_key_lines)
from alignkit.config.parts import (CheckpointConfig, DataConfig, LogConfig, ModelConfig, OptimConfig, PeftConfig,
                                   PreferenceDataConfig, SamplingConfig, TrainConfig, check_data_part, check_non_negative,
                                   check_positive, check_training_parts)
from alignkit.config.stages import (BestOfNConfig, CorpusConfig, DistillConfig, DPOConfig, EvalConfig, PretrainConfig,
                                    RewardNormConfig, RMConfig, SFTConfig, TinyModelConfig)
from alignkit.config.ppo import KLConfig, PlacementConfig, PPOAlgoConfig, PPOConfig, RolloutConfig
from alignkit.config.grpo import GroupConfig, GroupKLConfig, GRPOConfig
from alignkit.errors import ConfigError  # raised by every loader here; importable from both
from alignkit.config.data import EndpointConfig, SelfInstructConfig
from alignkit.config.demo import (KNOWN_STAGES, PIPELINE_STAGES, PipelineConfig, RoundsConfig, WorldConfig, WorldEvalConfig,
                                  pipeline_ppo_config)

__all__ = ["ConfigError", "BestOfNConfig", "CheckpointConfig", "CorpusConfig", "DPOConfig", "DataConfig", "DistillConfig", "EndpointConfig",
           "EvalConfig", "GRPOConfig", "GroupConfig", "GroupKLConfig", "KLConfig", "LogConfig", "ModelConfig", "OptimConfig", "KNOWN_STAGES", "PIPELINE_STAGES",
           "PPOAlgoConfig", "PPOConfig", "PeftConfig", "PipelineConfig", "PlacementConfig",
           "PreferenceDataConfig", "PretrainConfig", "RMConfig", "RewardNormConfig", "RolloutConfig",
           "RoundsConfig", "SFTConfig", "SelfInstructConfig", "SamplingConfig", "TinyModelConfig", "TrainConfig", "WorldConfig",
           "WorldEvalConfig", "all_keys", "check_data_part", "check_non_negative", "check_positive",
           "check_training_parts", "describe", "field_docs", "from_dict", "load_config", "missing_paths", "parse_override", "pipeline_ppo_config",
           "read_yaml", "to_dict", "to_yaml", "with_defaults", "yaml_key_lines"]
