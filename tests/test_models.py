"""Models: local loading and its errors, packing exactness, layer freezing, LoRA merge."""

from __future__ import annotations

import pytest
import torch

from alignkit.config import PeftConfig
from alignkit.data import Example, collate, pack_examples
from alignkit.data.tokenize import IGNORE_INDEX
from alignkit.errors import ModelError
from alignkit.losses import sequence_nll
from alignkit.models import apply_peft, freeze_lower_layers, load_causal_lm, load_tokenizer


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(ModelError, match="does not exist \\(give a local directory or .gguf file, or a hub id"):
        load_causal_lm(tmp_path / "nope")
    (tmp_path / "w.bin").write_text("x")
    with pytest.raises(ModelError, match="is a file but not .gguf"):
        load_causal_lm(tmp_path / "w.bin")
    with pytest.raises(ModelError, match="has no config.json"):
        load_tokenizer(tmp_path)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma", "gpt2"])
def test_tokenizer_has_pad_and_template(tiny_dirs, arch):
    tok = load_tokenizer(tiny_dirs[arch])
    assert tok.pad_token is not None and tok.chat_template


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma", "gpt2"])
def test_packed_batch_gives_same_per_sample_loss_as_one_by_one(tiny_dirs, arch):
    """Three samples packed in one row (position ids reset) vs run separately: same summed NLL each."""
    model = load_causal_lm(tiny_dirs[arch]).eval()
    gen = torch.Generator().manual_seed(0)
    examples = []
    for n in (7, 5, 9):
        ids = torch.randint(10, 300, (n,), generator=gen).tolist()
        examples.append(Example(ids, [IGNORE_INDEX] + ids[1:]))
    rows = pack_examples(examples, max_length=32)
    assert len(rows) == 1 and rows[0].num_samples == 3
    with torch.no_grad():
        batch = collate(rows, pad_id=0)
        labels = batch.pop("labels")
        token_logits = model(**batch, use_cache=False).logits  # a cache disables packed masking
        from alignkit.losses import token_nll

        nll, _ = token_nll(token_logits, labels)
        # split the packed row's per-token NLL back into samples (targets at positions 1..n-1 of each)
        packed_per_sample, start = [], 0
        for ex in examples:  # pack_examples keeps the data's order inside a row
            n = len(ex)
            packed_per_sample.append(nll[0, start:start + n - 1].sum().item())
            start += n
        single = []
        for ex in examples:
            b = collate([ex], pad_id=0)
            lab = b.pop("labels")
            s, _ = sequence_nll(model(**b, use_cache=False).logits, lab)
            single.append(s.item())
    assert packed_per_sample == pytest.approx(single, rel=1e-4)


def test_pack_examples_fits_everything():
    examples = [Example(list(range(n)), list(range(n))) for n in (30, 3, 12, 20, 7, 15, 1)]
    rows = pack_examples(examples, max_length=32)
    assert all(len(r) <= 32 for r in rows)
    assert sum(r.num_samples for r in rows) == len(examples)
    assert sum(len(r) for r in rows) == sum(len(e) for e in examples)
    assert len(rows) == 3  # 88 tokens need at least 3 rows of 32
    for r in rows:  # every sample's first label is masked, positions restart at 0
        starts = [i for i, p in enumerate(r.position_ids) if p == 0]
        assert all(r.labels[i] == IGNORE_INDEX for i in starts)


def _one_step(model, tok):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    ids = torch.tensor([tok("Reverse the word apple.").input_ids])
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()


@pytest.mark.parametrize("arch", ["llama", "gemma", "gpt2"])
def test_freezing_lower_layers_leaves_exactly_them_unchanged(tiny_dirs, arch):
    model = load_causal_lm(tiny_dirs[arch])
    tok = load_tokenizer(tiny_dirs[arch])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    frozen = set(freeze_lower_layers(model, 1))
    _one_step(model, tok)
    unchanged = {n for n, p in model.named_parameters() if torch.equal(p, before[n])}
    assert unchanged == frozen
    block0 = ".h.0." if arch == "gpt2" else ".layers.0."
    assert any(block0 in n for n in frozen) and not any(".layers.1." in n or ".h.1." in n for n in frozen)


def test_freeze_more_layers_than_model_has(tiny_dir):
    from alignkit.errors import ConfigError

    with pytest.raises(ConfigError, match="peft.freeze_layers=5, but the model has 2 blocks"):
        freeze_lower_layers(load_causal_lm(tiny_dir), 5)


def test_lora_merge_equals_w_plus_scaled_ba_and_outputs_match(tiny_dir, tmp_path):
    """merged W = W0 + (alpha / r) * B @ A for every adapted linear, and the merged model's logits
    equal the adapter model's."""
    tok = load_tokenizer(tiny_dir)
    model = apply_peft(load_causal_lm(tiny_dir), PeftConfig(method="lora", lora_r=4, lora_alpha=8, lora_dropout=0.0))
    with torch.no_grad():  # LoRA starts with B = 0; give B values so the merge is not trivial
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    model.eval()
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    w0 = layer.base_layer.weight.detach().clone()
    expected = w0 + (8 / 4) * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
    ids = torch.tensor([tok("Reverse the word apple.").input_ids])
    with torch.no_grad():
        adapter_logits = model(input_ids=ids).logits
    model.save_pretrained(tmp_path / "adapter")
    import json

    cfg_path = tmp_path / "adapter" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = str(tiny_dir)
    cfg_path.write_text(json.dumps(cfg))
    tok.save_pretrained(tmp_path / "adapter")

    from alignkit.cli import main

    assert main(["merge", str(tmp_path / "adapter"), str(tmp_path / "merged")]) == 0
    merged = load_causal_lm(tmp_path / "merged").eval()
    assert torch.allclose(merged.model.layers[0].self_attn.q_proj.weight, expected, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, adapter_logits, atol=1e-5)
    # the adapter directory itself loads as base + adapter, with the same outputs
    with torch.no_grad():
        assert torch.allclose(load_causal_lm(tmp_path / "adapter")(input_ids=ids).logits, adapter_logits, atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma", "gpt2"])
def test_padded_multi_row_packed_batch_matches_one_by_one(tiny_dirs, arch):
    """Five samples packed into several rows of at most 16 tokens (padded to the longest row): the
    summed NLL over all samples equals running each sample alone."""
    from alignkit.losses import token_nll

    model = load_causal_lm(tiny_dirs[arch]).eval()
    gen = torch.Generator().manual_seed(1)
    examples = []
    for n in (9, 4, 6, 11, 3):
        ids = torch.randint(10, 300, (n,), generator=gen).tolist()
        examples.append(Example(ids, [IGNORE_INDEX] + ids[1:]))
    rows = pack_examples(examples, max_length=16)
    assert len(rows) >= 2 and len({len(r) for r in rows}) > 1  # really padded
    with torch.no_grad():
        batch = collate(rows, pad_id=0)
        labels = batch.pop("labels")
        packed_total = token_nll(model(**batch, use_cache=False).logits, labels)[0].sum().item()
        single_total = 0.0
        for ex in examples:
            b = collate([ex], pad_id=0)
            lab = b.pop("labels")
            single_total += sequence_nll(model(**b, use_cache=False).logits, lab)[0].item()
    assert packed_total == pytest.approx(single_total, rel=1e-5)


def test_convert_writes_a_plain_hf_directory_with_the_same_outputs(tiny_dir, tmp_path):
    """alignkit convert: the written directory loads in plain transformers and gives the same logits."""
    from transformers import AutoModelForCausalLM

    from alignkit.cli import main
    from alignkit.models import load_causal_lm

    assert main(["convert", str(tiny_dir), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "model.safetensors").exists() and (tmp_path / "out" / "tokenizer_config.json").exists()
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        assert torch.allclose(load_causal_lm(tiny_dir)(input_ids=ids).logits,
                              AutoModelForCausalLM.from_pretrained(tmp_path / "out")(input_ids=ids).logits)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_disable_dropout_also_turns_off_attention_dropout_given_as_a_float(tiny_dirs, arch, tmp_path):
    """A checkpoint whose config sets attention_dropout = 0.5: Llama and Qwen2 read that float in the
    attention call in training mode (there is no Dropout module for it). After disable_dropout two
    forward passes in training mode agree exactly, so PPO's first ratio is 1 and DPO's first loss ln 2."""
    from transformers import AutoConfig

    from alignkit.models.value import disable_dropout

    config = AutoConfig.from_pretrained(tiny_dirs[arch])
    config.attention_dropout = 0.5
    model = load_causal_lm(tiny_dirs[arch])
    model.save_pretrained(tmp_path / "m")
    config.save_pretrained(tmp_path / "m")
    model = load_causal_lm(tmp_path / "m", attn_implementation="eager").train()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    torch.manual_seed(0)
    assert not torch.equal(model(ids).logits, model(ids).logits)  # the float is really used
    disable_dropout(model)
    assert torch.equal(model(ids).logits, model(ids).logits)
