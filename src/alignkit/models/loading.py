"""Load models and tokenizers: HF directories, LoRA adapter directories, GGUF files, and hub ids.

A model path is a local path, or a hub id `org/name` or `org/name@revision`, which huggingface_hub
resolves to a snapshot in its cache (HF_HOME), downloading what is missing as from_pretrained does;
with HF_HUB_OFFLINE=1 (the user's to set, never ours) only the cache is read. Every load then reads
that local directory (`local_files_only`). `trust_remote_code` stays off unless the config turns it on.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import torch

from alignkit.data.templates import ensure_chat_template
from alignkit.errors import ModelError
from alignkit.hub import snapshot

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# org/name or org/name@revision (a branch, tag or commit); a local path that exists wins.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
# What a model needs from a hub repo: weights as safetensors, configs, tokenizer files, code (run only
# with trust_remote_code). Not the other formats' copies of the weights (.bin, .h5, .msgpack, .onnx).
HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken", "*.py"]


def is_hub_id(path: str | Path) -> bool:
    text = str(path)
    return not Path(text).expanduser().exists() and bool(HUB_ID.match(text)) and ".." not in text


def hub_snapshot(spec: str) -> Path:
    """The local snapshot of hub model `org/name[@revision]`: from huggingface_hub's cache, downloading
    what is missing unless HF_HUB_OFFLINE is set. ModelError naming the id and the ways out."""
    repo, _, revision = spec.partition("@")
    folder = snapshot(repo, revision, repo_type="model", name=f"hub model '{spec}'", error=ModelError,
                      local="a local path (model.path=DIR)", allow_patterns=HUB_FILES)
    if not any(folder.glob("*.safetensors")) and (folder / "config.json").is_file() and not is_adapter_dir(folder):
        raise ModelError(f"hub model '{spec}' has no safetensors weights (only other formats); alignkit reads "
                         "safetensors, as a pickled checkpoint can run code: convert it, or pick a repo that has them")
    return folder


def local_dir(path: str | Path) -> Path:
    """The local directory (or file) a model path names: itself, or a hub id's snapshot."""
    return hub_snapshot(str(path)) if is_hub_id(path) else Path(path).expanduser()


def resolve(path: str | Path) -> tuple[Path, str | None]:
    """(directory, gguf file name or None) for a model path or hub id, or ModelError if it cannot be a model."""
    p = local_dir(path)
    if not p.exists():
        raise ModelError(f"model path '{path}' does not exist (give a local directory or .gguf file, or a hub id "
                         "org/name[@revision])")
    if p.is_file():
        if p.suffix != ".gguf":
            raise ModelError(f"model path '{path}' is a file but not .gguf; give a model directory or a .gguf file")
        return p.parent, p.name
    if is_adapter_dir(p) or (p / "config.json").is_file():
        return p, None
    ggufs = sorted(p.glob("*.gguf"))
    if len(ggufs) == 1:
        return p, ggufs[0].name
    raise ModelError(f"'{path}' has no config.json (nor adapter_config.json, nor a single .gguf file): not a model directory")


def is_adapter_dir(path: str | Path) -> bool:
    """Whether a model path (a local directory or a hub id) holds a LoRA adapter."""
    p = Path(path).expanduser()
    if not p.exists() and is_hub_id(path):
        p = hub_snapshot(str(path))
    return (p / "adapter_config.json").is_file()


def adapter_base_path(path: str | Path) -> str:
    cfg = json.loads((local_dir(path) / "adapter_config.json").read_text())
    base = cfg.get("base_model_name_or_path")
    if not base:
        raise ModelError(f"{path}/adapter_config.json names no base_model_name_or_path")
    return base


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


def load_tokenizer(path: str | Path, trust_remote_code: bool = False) -> Any:
    """The tokenizer of a model (or of an adapter's base), with a pad token and a chat template."""
    from transformers import AutoTokenizer

    directory, gguf = resolve(path)
    if gguf is None and is_adapter_dir(directory) and not (directory / "tokenizer_config.json").is_file():
        directory, gguf = resolve(adapter_base_path(directory))
    kwargs = {"gguf_file": gguf} if gguf else {}
    if not gguf and Path(directory).is_dir() and not any((Path(directory) / f).exists() for f in TOKENIZER_FILES):
        raise ModelError(f"'{path}' has no tokenizer (none of {', '.join(TOKENIZER_FILES)}): save the tokenizer beside "
                         "the model (tokenizer.save_pretrained(DIR))")
    try:
        tok = AutoTokenizer.from_pretrained(directory, local_files_only=True, trust_remote_code=trust_remote_code, **kwargs)
    except Exception as exc:
        raise ModelError(f"cannot load a tokenizer from '{path}': {exc}") from None
    if tok.pad_token is None:
        # The pad id never reaches the loss (labels are -100 there), so EOS is a safe pad.
        tok.pad_token = tok.eos_token
    ensure_chat_template(tok)
    return tok


def weights_error(path: str | Path, exc: Exception) -> Exception:
    """A weights file that cannot be read, said plainly: a truncated or corrupt safetensors file, or a
    pickle (pytorch_model.bin) that torch's weights-only loader refuses. Other errors unchanged."""
    text = str(exc)
    if type(exc).__name__ == "SafetensorError" or "safetensors" in type(exc).__module__:
        return ModelError(f"the weights in '{path}' cannot be read ({text[:120]}): the safetensors file is truncated "
                          "or corrupt; copy or save it again")
    if "Weights only load failed" in text or type(exc).__name__ == "UnpicklingError":
        return ModelError(f"the weights in '{path}' are a pickle (pytorch_model.bin) holding more than tensors: torch's "
                          "weights-only loader refuses it, as unpickling arbitrary objects can run code. Convert it "
                          "to safetensors with a tool you trust")
    return exc


def quantization_kwargs(quantization: str, dtype: str, path: str | Path) -> dict[str, Any]:
    """from_pretrained's arguments for bitsandbytes quantisation ("none": none): NF4 with double
    quantisation computing in `dtype` (QLoRA, Dettmers et al. 2023), or LLM.int8(); the weights go
    to this process's device, as bitsandbytes places them while loading."""
    if quantization == "none":
        return {}
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelError(f"model.quantization={quantization} needs bitsandbytes: pip install bitsandbytes")
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                    bnb_4bit_compute_dtype=DTYPES[dtype])
    elif quantization == "8bit":
        config = BitsAndBytesConfig(load_in_8bit=True)
    else:
        raise ModelError(f"'{path}': unknown quantization '{quantization}' (none, 4bit, 8bit)")
    device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    return {"quantization_config": config, "device_map": {"": device}}


def load_causal_lm(path: str | Path, dtype: str = "float32", trust_remote_code: bool = False,
                   attn_implementation: str | None = "sdpa", quantization: str = "none") -> torch.nn.Module:
    """A causal LM from a local directory, GGUF file or hub id; an adapter directory loads base +
    adapter. quantization: 4bit / 8bit through bitsandbytes (a plain directory or hub id only)."""
    from transformers import AutoModelForCausalLM

    directory, gguf = resolve(path)
    if quantization != "none" and (gguf or is_adapter_dir(directory)):
        raise ModelError(f"'{path}': quantised loading takes a plain model directory or hub id, not a "
                         + ("GGUF file (convert it first: alignkit convert)" if gguf else
                            "LoRA adapter (merge it into its base first: alignkit merge)"))
    if gguf is None and is_adapter_dir(directory):
        from peft import PeftModel

        base = load_causal_lm(adapter_base_path(directory), dtype, trust_remote_code, attn_implementation)
        if isinstance(base, PeftModel):  # an adapter trained on a merged adapter: fold the first one in
            base = base.merge_and_unload()
        return PeftModel.from_pretrained(base, directory, is_trainable=False)
    kwargs: dict[str, Any] = {"dtype": DTYPES[dtype], "local_files_only": True, "trust_remote_code": trust_remote_code}
    if gguf:
        kwargs["gguf_file"] = gguf
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    kwargs.update(quantization_kwargs(quantization, dtype, path))
    try:
        model = AutoModelForCausalLM.from_pretrained(directory, **kwargs)
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise ModelError(f"'{path}' needs its own code to load; set model.trust_remote_code=true if you trust it") from None
        raise ModelError(f"cannot load a causal LM from '{path}': {exc}") from None
    except OSError as exc:
        raise ModelError(f"cannot load a causal LM from '{path}': {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the file-format errors below; anything else re-raised
        raise weights_error(path, exc) from None
    if gguf:
        # transformers dequantises GGUF weights to plain tensors on load but still marks the model as
        # quantized, which makes save_pretrained refuse; the marks no longer describe the weights.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.is_quantized = False
    if model.config.pad_token_id is None and model.config.eos_token_id is not None:
        eos = model.config.eos_token_id
        model.config.pad_token_id = eos[0] if isinstance(eos, list) else eos
    return model


def load_policy(model_cfg: Any) -> torch.nn.Module:
    """The causal LM a stage trains or samples from, as one plain model (model_cfg: path, dtype,
    trust_remote_code, attn_implementation): an adapter directory is loaded on its base and folded
    into it, so the result trains whole or takes a fresh adapter. Every parameter trainable."""
    quantization = getattr(model_cfg, "quantization", "none")
    model = load_causal_lm(model_cfg.path, model_cfg.dtype, model_cfg.trust_remote_code,
                           model_cfg.attn_implementation, quantization)
    if quantization != "none":
        from peft import prepare_model_for_kbit_training

        # Quantised weights stay frozen (LoRA trains on top); norms and the head go to fp32 for
        # stable training. Checkpointing is train.gradient_checkpointing's, not turned on here.
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()  # peft leaves the merged weights frozen
    return model.requires_grad_(True)


def load_reference(model_cfg: Any, reference_path: str, tokenizer: Any) -> torch.nn.Module:
    """A preference stage's reference_path model, loaded like the policy (model_cfg with another
    path), refused if its vocabulary differs: the losses compare log-probs of the same token ids."""
    import dataclasses

    if load_tokenizer(reference_path, model_cfg.trust_remote_code).get_vocab() != tokenizer.get_vocab():
        raise ModelError(f"reference_path {reference_path} has another tokenizer than {model_cfg.path}: the loss "
                         "compares the log-probs both give to the same token ids")
    return load_policy(dataclasses.replace(model_cfg, path=reference_path))
