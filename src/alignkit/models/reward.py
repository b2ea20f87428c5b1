"""Reward models: a scalar head on a local Hugging Face backbone, through the sequence-classification
classes (num_labels=1), so the saved directory loads in `transformers` as it is.

For decoders (Llama, GPT-2, Qwen2, ...) the score is read at the last real token, found from the
attention mask. transformers' own pooling looks for the last token that is not the pad id, which
goes wrong when pad == EOS (common: SmolLM2, Llama-3) because a response ends with EOS. Encoders
(BERT-style) keep their own pooling (the [CLS] position).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
import torch
from torch import nn

from alignkit.errors import ModelError
from alignkit.models.generate import position_ids_from_mask
from alignkit.models.loading import DTYPES, local_dir, quantization_kwargs, resolve, weights_error


def last_real_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of the rightmost position whose mask is 1: right- and left-padded batches alike."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(dim=1)


class RewardModel(nn.Module):
    """Wraps a sequence-classification model; forward returns one score per sequence, shape (B,).

    A module of its own (not a function over submodules) so that DDP/FSDP wrap the whole
    computation and gradients synchronise.
    """

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.hf = hf_model
        self.decoder = hasattr(self.unwrapped(), "score")  # GenericForSequenceClassification, GPT-2: `score`

    @property
    def config(self) -> Any:
        """The backbone's config: engines read model sizes from it (DeepSpeed's "auto" buckets)."""
        return self.unwrapped().config

    def unwrapped(self) -> nn.Module:
        """The transformers model (inside a peft wrapper, whose LoRA layers sit in it in place)."""
        return self.hf.get_base_model() if hasattr(self.hf, "get_base_model") else self.hf

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, ends: torch.Tensor | None = None) -> torch.Tensor:
        """Scores (B,) of padded sequences (attention_mask), or (N,) of sequences packed into rows
        (position_ids restarting per sequence, no mask; `ends` (N, 2) gives each one's row and last
        column)."""
        if not self.decoder:
            return self.hf(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0].float()
        model = self.unwrapped()
        backbone = getattr(model, model.base_model_prefix)
        if ends is not None:
            hidden = backbone(input_ids=input_ids, position_ids=position_ids, use_cache=False).last_hidden_state
            return model.score(hidden[ends[:, 0], ends[:, 1]]).squeeze(-1).float()
        position_ids = position_ids_from_mask(attention_mask)
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=False).last_hidden_state
        index = last_real_index(attention_mask)
        last = hidden[torch.arange(hidden.shape[0], device=hidden.device), index]
        return model.score(last).squeeze(-1).float()


def pack_sequences(seqs: list[list[int]], row_length: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Sequences packed into rows of at most row_length tokens (best fit, longest first), with
    position ids restarting per sequence and `ends` (N, 2): the row and last column of sequence i."""
    from alignkit.data.packing import best_fit_bins

    rows = best_fit_bins([len(q) for q in seqs], row_length)
    width = max(sum(len(seqs[i]) for i in members) for members in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    ends = torch.zeros((len(seqs), 2), dtype=torch.long)
    for r, members in enumerate(rows):
        col = 0
        for i in members:
            n = len(seqs[i])
            ids[r, col:col + n] = torch.tensor(seqs[i])
            pos[r, col:col + n] = torch.arange(n)
            ends[i] = torch.tensor([r, col + n - 1])
            col += n
        pos[r, col:] = torch.arange(width - col)  # padding: one more segment nothing reads
    return {"input_ids": ids, "position_ids": pos, "ends": ends}


def batch_sequences(seqs: list[list[int]], pad_id: int, pack_rows: int = 0) -> dict[str, torch.Tensor]:
    """Sequences for one scoring pass: right-padded together (input_ids, attention_mask), or packed
    into rows of pack_rows tokens (pack_sequences: input_ids, position_ids, ends)."""
    if pack_rows:
        return pack_sequences(seqs, pack_rows, pad_id)
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
    return {"input_ids": ids, "attention_mask": mask}


@torch.no_grad()
def packing_is_exact_for_rewards(model: RewardModel, vocab_size: int) -> bool:
    """True when packed scores equal scores of the same sequences run alone (decoders whose mask
    honours restarting position ids)."""
    if not model.decoder:
        return False
    gen = torch.Generator().manual_seed(0)
    seqs = [torch.randint(3, vocab_size, (n,), generator=gen).tolist() for n in (5, 7, 4)]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        alone = torch.cat([model(torch.tensor([s], device=device), torch.ones(1, len(s), dtype=torch.long, device=device))
                           for s in seqs])
        batch = {k: v.to(device) for k, v in pack_sequences(seqs, 64, 0).items()}
        packed = model(batch["input_ids"], position_ids=batch["position_ids"], ends=batch["ends"])
    except Exception:
        return False
    finally:
        model.train(was_training)
    return bool(torch.allclose(alone, packed, atol=1e-4, rtol=1e-3))


def load_reward_backbone(path: str | Path, dtype: str = "float32", trust_remote_code: bool = False,
                         trained: bool = False, quantization: str = "none") -> nn.Module:
    """A sequence-classification model with one output from a local model directory (a causal LM's
    weights become the backbone; the scalar head starts fresh unless the directory already has one).
    trained: the directory must hold a trained head (a reward model to score with, not to train)."""
    from transformers import AutoModelForSequenceClassification

    directory, gguf = resolve(path)
    if gguf:
        raise ModelError(f"'{path}': convert a GGUF model to a HF directory first (load_causal_lm + save_pretrained)")
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            directory, num_labels=1, dtype=DTYPES[dtype], local_files_only=True, trust_remote_code=trust_remote_code,
            output_loading_info=True, **quantization_kwargs(quantization, dtype, path))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load a reward model (sequence classification) from '{path}': {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a truncated or pickled weights file, said plainly
        raise weights_error(path, exc) from None
    if trained and info.get("missing_keys"):
        # Any causal LM loads as a classifier with a freshly initialised head: scoring with it is noise.
        raise ModelError(f"'{path}' is not a trained reward model: it has no weights for "
                         f"{', '.join(sorted(info['missing_keys'])[:3])} (the score head would start random); "
                         "train one with `alignkit rm`, or give the directory it wrote")
    if model.config.pad_token_id is None:
        eos = model.config.eos_token_id
        model.config.pad_token_id = eos[0] if isinstance(eos, list) else eos
    if quantization != "none":  # LoRA on the frozen quantised backbone; the fresh head trains whole
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model


@torch.no_grad()
def score_conversations(model: RewardModel, tokenizer: Any, prompts: list[list[dict[str, str]]], responses: list[str],
                        max_length: int = 512, batch_size: int = 64) -> torch.Tensor:
    """(N,) rewards of each response to its prompt (chat template applied, EOS last; a sequence
    longer than max_length keeps its end, where the score is read)."""
    from alignkit.data.reward import conversation_ids

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(prompts), batch_size):
        seqs = [conversation_ids(tokenizer, tuple(p), r, 10**9)[-max_length:]
                for p, r in zip(prompts[start:start + batch_size], responses[start:start + batch_size])]
        batch = batch_sequences(seqs, tokenizer.pad_token_id)
        out.append(model(batch["input_ids"].to(device), batch["attention_mask"].to(device)).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def normalization_of(path: str | Path) -> dict:
    """What `alignkit rm` recorded beside a model (reward_normalization.json; empty if none)."""
    import json

    norm = local_dir(path) / "reward_normalization.json"
    return json.loads(norm.read_text()) if norm.is_file() else {}


def reward_offset_of(path: str | Path) -> float:
    """The offset `alignkit rm` recorded beside a reward model (0 if none): subtracted from its scores."""
    return float(normalization_of(path).get("offset", 0.0))


def is_cost_model(path: str | Path) -> bool:
    """Whether `alignkit rm` trained the model with objective=cost (a score of harm: higher is worse)."""
    return normalization_of(path).get("objective") == "cost"


def load_reward_model(path: str | Path) -> tuple[RewardModel, float]:
    """A trained reward model directory: the model and the offset to subtract from its scores."""
    return RewardModel(load_reward_backbone(path, trained=True)), reward_offset_of(path)
