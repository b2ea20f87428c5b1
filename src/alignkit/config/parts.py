"""The parts every stage config is built from (model, data, optim, peft, train, checkpoint, log,
preference data, sampling) and the checks they share.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Literal

from alignkit.errors import ConfigError

# log.report_to: accelerate's tracker name -> the module it needs (tensorboard: torch's SummaryWriter's).
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio",
            "comet_ml": "comet_ml", "aim": "aim", "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab"}


@dataclass
class ModelConfig:
    path: str = ""
    """A Hugging Face model directory (config.json + weights), a LoRA adapter directory, a .gguf file,
    or a hub id org/name[@revision] (through the hub cache; HF_HUB_OFFLINE=1 reads only the cache)."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """dtype the weights are loaded in. Keep float32 on CPU; bf16 mixed precision is `train.precision`."""
    quantization: Literal["none", "4bit", "8bit"] = "none"
    """Load the weights quantised by bitsandbytes, to train LoRA adapters on top (QLoRA: 4bit is NF4
    with double quantisation, computing in `dtype`; the adapters stay in full precision). Needs
    peft.method=lora and `pip install bitsandbytes`."""
    trust_remote_code: bool = False
    """Allow a model directory to run its own Python code. Off unless you trust the directory."""
    attn_implementation: str = "sdpa"
    """Attention kernel passed to transformers: sdpa, eager, or flash_attention_2 where installed."""

    def validate(self, where: str) -> None:
        if not self.path:
            raise ConfigError(f"{where}: model.path is required (a model directory, a .gguf file or a hub id)")


@dataclass
class DataConfig:
    train_path: str = ""
    """Training data: a .json, .jsonl or .parquet file, a directory saved by `datasets`, or a hub data
    set hf://org/name[@revision][?split=S&subset=C] (split: data.split unless given)."""
    eval_path: str = ""
    """Held-out data in the same formats. Empty: split `eval_fraction` of the training rows off."""
    eval_fraction: float = 0.05
    """Share of training rows held out for evaluation when `eval_path` is empty (0 disables eval)."""
    format: Literal["auto", "alpaca", "messages", "prompt_completion", "text"] = "auto"
    """Row format. auto detects from the keys: instruction/output (Alpaca), messages or
    conversations (chat, ShareGPT spelling too), prompt/completion, text (plain text, every token
    trained; a raw HH transcript is read as a chat)."""
    max_length: int = 512
    """Maximum tokens per sample (and per packed sequence)."""
    truncation: Literal["right", "drop"] = "right"
    """Too-long samples: right keeps the first max_length tokens (the end of the response and its EOS
    are lost); drop removes the sample. Either way the count is reported."""
    packing: Literal["auto", "on", "off"] = "auto"
    """Pack short samples into full sequences, with position ids reset per sample so no token attends
    across a sample boundary. auto: on when a startup check shows the model masks packed samples
    correctly; on: require it; off: pad each batch instead."""
    dedupe: bool = True
    """Drop exact duplicate rows (after normalising to messages), counted in the data report."""
    keep_field: str = ""
    """A field of each row (such as a quality label) that decides which rows are trained on: only rows
    whose value is one of `keep_values` are kept, the rest dropped and counted in the data report
    (before deduping and the eval split, in the training and eval data alike). A row without the field
    is an error. Empty: every row is kept."""
    keep_values: list[str] = field(default_factory=list)
    """The values of `keep_field` kept (compared as strings), e.g. [correct, refusal]."""
    filter_model: str = ""
    """A reward model (`alignkit rm`'s output directory) that scores each training row's last
    response; rows scoring below filter_min_score are dropped and counted in the data report
    (reward-filtered SFT). A cost model (objective=cost) scores with its negated cost. Empty: no
    scoring."""
    filter_min_score: float = 0.0
    """The lowest score kept, on the reward model's normalised scale (its offset subtracted: 0 is the
    mean score of the policy it was normalised on); with a cost model, 0 keeps what it judges safe."""
    split: str = "train"
    """Split to read from a saved `datasets` DatasetDict directory."""
    chat_template: str = ""
    """The chat template: empty keeps the tokenizer's own (a documented default when it has none); a
    built-in name (chatml, llama3, zephyr, alpaca, default) or a .jinja file replaces it, and the
    saved model's tokenizer carries it on."""


@dataclass
class OptimConfig:
    lr: float = 2e-5
    """Peak learning rate (after warmup)."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay; not applied to biases and norm weights."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW (beta1, beta2)."""
    eps: float = 1e-8
    """AdamW epsilon."""
    schedule: Literal["constant", "linear", "cosine"] = "cosine"
    """Learning-rate schedule after warmup: constant, linear decay to min_lr_ratio, or cosine decay."""
    warmup_steps: int = 0
    """Linear warmup from 0 over this many optimizer steps (overrides warmup_ratio when > 0)."""
    warmup_ratio: float = 0.03
    """Warmup as a share of the total optimizer steps, used when warmup_steps is 0."""
    min_lr_ratio: float = 0.0
    """Final learning rate as a share of lr for the linear and cosine schedules."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this value (0 disables clipping)."""
    name: Literal["adamw", "adamw_8bit"] = "adamw"
    """adamw: torch's AdamW; adamw_8bit: bitsandbytes' AdamW8bit, whose moments of tensors of 4096
    values or more are kept in 8 bits (about a quarter of AdamW's optimizer memory)."""


@dataclass
class PeftConfig:
    method: Literal["full", "lora", "prefix"] = "full"
    """full: train all (unfrozen) weights; lora: low-rank adapters; prefix: prefix tuning (peft)."""
    freeze_layers: int = 0
    """Freeze the embeddings and the lowest N transformer blocks; train only the blocks above and the
    head (full method only)."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator: the update is (alpha / r) * B @ A."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input."""
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    """Module names to adapt (e.g. [q_proj, v_proj]); all-linear adapts every linear layer but the head."""
    prefix_tokens: int = 16
    """Number of virtual tokens for prefix tuning."""

    def validate(self, where: str, prefix_unsupported_in: str = "") -> None:
        """prefix_unsupported_in: the stage that cannot use prefix tuning (its name goes in the error)."""
        if prefix_unsupported_in and self.method == "prefix":
            raise ConfigError(f"{where}: peft.method=prefix is not supported for {prefix_unsupported_in}; "
                              "use full or lora")
        if self.freeze_layers and self.method != "full":
            raise ConfigError(f"{where}: peft.freeze_layers applies to peft.method=full only")
        check_non_negative(where, "peft.freeze_layers", self.freeze_layers)
        check_positive(where, "peft.lora_r", self.lora_r)
        check_positive(where, "peft.prefix_tokens", self.prefix_tokens)


@dataclass
class TrainConfig:
    batch_size: int = 8
    """Per device per micro-batch: samples (or packed rows) for SFT and pretraining, preference pairs
    for the reward model (each pair is two sequences)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step. Global batch = batch_size x grad_accum x processes."""
    epochs: float = 1.0
    """Passes over the training data, used when max_steps is 0."""
    max_steps: int = 0
    """Optimizer steps to run; 0 derives it from epochs."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """fp32, or bf16 mixed precision (autocast, fp32 master weights). bf16 is slow on CPUs without
    AVX-512-BF16."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass instead of keeping them: less memory for longer
    sequences and larger models, about a third more compute; the same gradients."""
    eval_every: int = 0
    """Evaluate on the held-out split every N optimizer steps (0: only at the end): loss and perplexity
    for language models, pairwise accuracy and margin for reward models."""
    eval_batch_size: int = 16
    """Per device per evaluation batch (samples, or pairs for the reward model)."""


@dataclass
class CheckpointConfig:
    save_every: int = 0
    """Save a resumable checkpoint every N optimizer steps (0: only the final model)."""
    keep_last: int = 2
    """How many of the newest checkpoints to keep, at least 1 (older ones are deleted)."""


@dataclass
class LogConfig:
    every: int = 10
    """Write a metrics row (and refresh the progress bar's figures) every N optimizer steps."""
    progress: bool = True
    """Show a progress bar with loss, learning rate, throughput (tokens/s or pairs/s) and ETA."""
    tensorboard: bool = False
    """Also write TensorBoard event files to output_dir/tensorboard (needs the tensorboard package)."""
    report_to: list[str] = field(default_factory=list)
    """Experiment trackers that get every metrics row and the run's config, through accelerate:
    tensorboard, wandb, mlflow, trackio, comet_ml, aim, clearml, dvclive, swanlab (each needs its
    package, and is set up as usual: WANDB_MODE=offline, MLFLOW_TRACKING_URI=...)."""
    project: str = "alignkit"
    """The trackers' project (wandb) or experiment (mlflow); the run is named after output_dir."""


@dataclass
class PreferenceDataConfig:
    train_path: str = ""
    """Preference data: pairwise (prompt/chosen/rejected, or chosen/rejected conversations) or ranked
    (prompt + responses best first, or with ranking/scores/ratings) rows, in any file type SFT reads."""
    eval_path: str = ""
    """Held-out preference data. Empty: split eval_fraction of the prompts off (every
    ranking of a held-out prompt goes to eval)."""
    eval_fraction: float = 0.1
    """Share of rankings held out for evaluation when eval_path is empty."""
    max_length: int = 512
    """Maximum tokens per prompt + response; longer prompts lose their start."""
    adjacent_only: bool = False
    """Turn a ranking of k into its k - 1 adjacent pairs instead of all k(k-1)/2."""
    rating_margin: bool = False
    """Use the rating gap of rated rows as the pair's margin in the loss."""
    chat_template: str = ""
    """The chat template: empty keeps the tokenizer's own (a documented default when it has none); a
    built-in name (chatml, llama3, zephyr, alpaca, default) or a .jinja file replaces it, and the
    saved model's tokenizer carries it on."""
    rating_aspect: str = "mean"
    """UltraFeedback-style rows (completions rated per aspect): the aspect to rank by (helpfulness,
    honesty, instruction_following, truthfulness, ...), overall_score, fine-grained_score, or mean
    (the mean of each response's aspect ratings)."""
    packing: Literal["auto", "on", "off"] = "auto"
    """Pack a batch's chosen and rejected sequences into rows of max_length with position ids
    restarting per sequence, instead of padding every sequence to the longest. auto: on for decoders
    whose scores a startup check shows are unchanged by packing."""


@dataclass
class SamplingConfig:
    max_new_tokens: int = 64
    """Longest response sampled (a response that reaches it without EOS has not ended)."""
    temperature: float = 1.0
    """Sampling temperature."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens with this much probability (1 disables)."""
    top_k: int = 0
    """Keep only the k most likely tokens (0 disables)."""

    def validate(self, where: str) -> None:
        check_positive(where, "sampling.max_new_tokens", self.max_new_tokens)
        check_positive(where, "sampling.temperature", self.temperature)
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"{where}: sampling.top_p must be in (0, 1], got {self.top_p}")
        check_non_negative(where, "sampling.top_k", self.top_k)


def check_positive(where: str, key: str, value: float) -> None:
    if not value > 0:  # written so that NaN fails too
        raise ConfigError(f"{where}: {key} must be > 0, got {value}")


def check_non_negative(where: str, key: str, value: float) -> None:
    if not value >= 0:  # NaN fails too
        raise ConfigError(f"{where}: {key} must be >= 0, got {value}")


def check_data_part(where: str, data: Any) -> None:
    """Checks shared by every stage with a data section (SFT, reward model, DPO)."""
    if not data.train_path:
        raise ConfigError(f"{where}: data.train_path is required")
    check_positive(where, "data.max_length", data.max_length)
    if not 0.0 <= data.eval_fraction < 1.0:
        raise ConfigError(f"{where}: data.eval_fraction must be in [0, 1), got {data.eval_fraction}")


def check_row_selection(where: str, data: DataConfig) -> None:
    """data.keep_field and data.keep_values come together (SFT-format data only)."""
    if data.keep_field and not data.keep_values:
        raise ConfigError(f"{where}: data.keep_field={data.keep_field} keeps no row; give data.keep_values, "
                          "the values of that field to train on")
    if data.keep_values and not data.keep_field:
        raise ConfigError(f"{where}: data.keep_values is set but data.keep_field is empty; name the field")


def check_training_parts(where: str, cfg: Any) -> None:
    """Checks shared by every stage with train/optim/checkpoint/log sections."""
    check_positive(where, "train.batch_size", cfg.train.batch_size)
    check_positive(where, "train.grad_accum", cfg.train.grad_accum)
    check_positive(where, "train.eval_batch_size", cfg.train.eval_batch_size)
    check_non_negative(where, "train.max_steps", cfg.train.max_steps)
    check_non_negative(where, "train.epochs", cfg.train.epochs)
    check_non_negative(where, "train.eval_every", cfg.train.eval_every)
    if cfg.train.max_steps == 0 and cfg.train.epochs == 0:
        raise ConfigError(f"{where}: set train.max_steps > 0 or train.epochs > 0")
    check_positive(where, "optim.lr", cfg.optim.lr)
    check_non_negative(where, "optim.weight_decay", cfg.optim.weight_decay)
    check_non_negative(where, "optim.warmup_steps", cfg.optim.warmup_steps)
    check_non_negative(where, "optim.max_grad_norm", cfg.optim.max_grad_norm)
    if not 0.0 <= cfg.optim.warmup_ratio <= 1.0:
        raise ConfigError(f"{where}: optim.warmup_ratio must be in [0, 1], got {cfg.optim.warmup_ratio}")
    if not 0.0 <= cfg.optim.min_lr_ratio <= 1.0:
        raise ConfigError(f"{where}: optim.min_lr_ratio must be in [0, 1], got {cfg.optim.min_lr_ratio}")
    if len(cfg.optim.betas) != 2 or not all(0.0 <= b < 1.0 for b in cfg.optim.betas):
        raise ConfigError(f"{where}: optim.betas must be two numbers in [0, 1), got {cfg.optim.betas}")
    check_non_negative(where, "checkpoint.save_every", cfg.checkpoint.save_every)
    check_positive(where, "checkpoint.keep_last", cfg.checkpoint.keep_last)
    check_positive(where, "log.every", cfg.log.every)
    for name in cfg.log.report_to:
        if name not in TRACKERS:
            close = difflib.get_close_matches(str(name), list(TRACKERS), n=1)
            raise ConfigError(f"{where}: log.report_to: unknown tracker {name!r}"
                              + (f"; did you mean {close[0]!r}?" if close else f" (one of {', '.join(TRACKERS)})"))
    model, peft = getattr(cfg, "model", None), getattr(cfg, "peft", None)
    if model is not None and getattr(model, "quantization", "none") != "none" and \
            (peft is None or peft.method != "lora"):
        raise ConfigError(f"{where}: model.quantization={model.quantization} trains LoRA adapters on the quantised "
                          "weights; set peft.method=lora")
