"""Pretraining from scratch: train a byte-level BPE tokenizer and a small model on a corpus.

setup   accelerator, run dir, corpus (a file, or the demo world's "web"), tokenizer trained on it,
        documents tokenised (BOS + text + EOS, every token labelled) and packed, model built
loop    training.lm_loop.train_and_save, as SFT (the shared step loop, training/loop.py)
save    final evaluation, the model and tokenizer (with a chat template for later stages) in
        output_dir/model
"""

from __future__ import annotations

import random
from pathlib import Path

from alignkit.config import PretrainConfig
from alignkit.data import Example, pack_examples, packing_is_exact, read_records
from alignkit.errors import ConfigError, DataError
from alignkit.models import count_parameters
from alignkit.models.tiny import tiny_config, train_tokenizer
from alignkit.training import engine
from alignkit.training.lm_loop import train_and_save
from alignkit.training.run import begin_stage, say


def read_corpus(path: str) -> list[str]:
    """Documents from a .txt file (one per non-empty line) or a .jsonl file with a "text" field."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"corpus file {p} does not exist")
    if p.suffix == ".jsonl":
        docs = []
        for record in read_records(p):
            if not isinstance(record.row.get("text"), str):
                raise DataError(f"{record.where}: expected an object with a string field 'text'")
            docs.append(record.row["text"])
    else:
        docs = [line for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not docs:
        raise DataError(f"corpus file {p} holds no documents")
    return docs


def load_documents(cfg: PretrainConfig) -> list[str]:
    """The corpus file's documents, or the demo world's generated corpus."""
    if cfg.corpus.path:
        return read_corpus(cfg.corpus.path)
    from alignkit.world.corpus import corpus_documents, vocabulary_text

    return corpus_documents(cfg.corpus.documents, cfg.seed, groups=cfg.corpus.groups) + [vocabulary_text(cfg.corpus.groups)]


def document_examples(docs: list[str], tokenizer, max_length: int) -> list[Example]:
    """Each document as BOS + text + EOS, split into pieces of at most max_length; all tokens labelled."""
    ids_per_doc = tokenizer(docs, add_special_tokens=False)["input_ids"]
    out = []
    for ids in ids_per_doc:
        ids = [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id]
        for i in range(0, len(ids), max_length):
            piece = ids[i:i + max_length]
            if len(piece) > 1:
                out.append(Example(piece, list(piece)))
    return out


def run_pretrain(cfg: PretrainConfig) -> Path:
    """Train a tokenizer and a model from scratch; return the saved model directory."""
    # ---------------------------------------------------------------- setup
    accelerator, run_dir, model_dir = begin_stage(cfg, "pretrain")
    if model_dir is None:
        return run_dir / "model"

    docs = load_documents(cfg)
    random.Random(cfg.seed).shuffle(docs)
    n_eval = int(len(docs) * cfg.corpus.eval_fraction)
    tokenizer = train_tokenizer(docs, cfg.model.vocab_size)  # deterministic for the same documents
    train_rows = pack_examples(document_examples(docs[n_eval:], tokenizer, cfg.model.max_length), cfg.model.max_length)
    eval_rows = pack_examples(document_examples(docs[:n_eval], tokenizer, cfg.model.max_length), cfg.model.max_length)

    from transformers import AutoModelForCausalLM

    config = tiny_config(cfg.model.arch, len(tokenizer), cfg.model.hidden, cfg.model.layers, cfg.model.heads,
                         max(512, cfg.model.max_length), tokenizer)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").to(accelerator.device)
    with engine.gathered_parameters(accelerator, model):  # a forward pass: whole weights under ZeRO-3
        exact, problem = packing_is_exact(model, len(tokenizer))
    if not exact:  # documents are always packed here
        raise ConfigError(f"model.arch={cfg.model.arch} {problem}; pretraining packs documents and needs it")
    _, total = count_parameters(model)
    say(accelerator, f"corpus {len(docs):,} documents, {sum(len(r) for r in train_rows):,} training tokens in "
                     f"{len(train_rows):,} rows; tokenizer {len(tokenizer)} tokens; model {total:,} parameters")

    # ---------------------------------------------------------------- loop and save
    return train_and_save(cfg, name="pretrain", accelerator=accelerator, model=model, tokenizer=tokenizer,
                          train_rows=train_rows, eval_rows=eval_rows, run_dir=run_dir, base_model_path=None)
