"""Pretraining from scratch on the demo world's corpus (reduced) and on a corpus file."""

from __future__ import annotations

import json

import pytest

from alignkit.config import PretrainConfig, load_config
from alignkit.errors import DataError
from alignkit.stages.pretrain import document_examples, read_corpus, run_pretrain
from alignkit.world.corpus import corpus_documents


def test_corpus_is_deterministic_and_free_of_the_chat_protocol():
    docs = corpus_documents(300, seed=1)
    assert docs == corpus_documents(300, seed=1) and len(docs) == 300
    text = "\n".join(docs)
    assert "<|user|>" not in text and "<|assistant|>" not in text and "### User" not in text
    assert "[harmful instructions omitted]" in text  # unaligned "web" behaviour to unlearn later
    assert "The capital of Zorvia is Plemt." in text


def test_document_examples_label_every_token_and_split_long_documents(tokenizer):
    examples = document_examples(["apple pear " * 40, "fig"], tokenizer, max_length=16)
    assert all(len(e) <= 16 and e.labels == e.input_ids for e in examples)
    assert examples[0].input_ids[0] == tokenizer.bos_token_id
    assert examples[-1].input_ids[-1] == tokenizer.eos_token_id and len(examples) > 3


def test_read_corpus_errors(tmp_path):
    (tmp_path / "c.jsonl").write_text('{"text": "a"}\n{"txt": "b"}\n')
    with pytest.raises(DataError, match=r"c.jsonl, line 2: expected an object with a string field 'text'"):
        read_corpus(str(tmp_path / "c.jsonl"))
    (tmp_path / "c.txt").write_text("\n\n")
    with pytest.raises(DataError, match="holds no (documents|rows)"):
        read_corpus(str(tmp_path / "c.txt"))


def test_pretrain_lowers_loss_and_saves_a_loadable_model(tmp_path):
    cfg = load_config(PretrainConfig, None, [
        f"output_dir={tmp_path / 'pt'}", "corpus.documents=400", "model.hidden=64", "model.max_length=64",
        "train.max_steps=40", "train.batch_size=16", "train.eval_every=20", "log.progress=false", "log.every=10"])
    model_dir = run_pretrain(cfg)
    rows = [json.loads(line) for line in (tmp_path / "pt" / "metrics.jsonl").read_text().splitlines()]
    evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
    assert evals[-1] < 0.6 * evals[0]
    from alignkit.models import load_causal_lm, load_tokenizer

    tok, model = load_tokenizer(model_dir), load_causal_lm(model_dir)
    assert tok.chat_template and "<|assistant|>" in tok.get_vocab()
    assert model.config.vocab_size == len(tok)
