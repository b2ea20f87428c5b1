"""QLoRA and the 8-bit optimizer through bitsandbytes, on CPU (bitsandbytes >= 0.48 runs its 4-bit
and 8-bit layers and its 8-bit AdamW there)."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

bnb = pytest.importorskip("bitsandbytes")


def sft(model_dir, data, out, *overrides):
    from alignkit.config import SFTConfig, load_config
    from alignkit.stages.sft import run_sft

    cfg = load_config(SFTConfig, None, [f"model.path={model_dir}", f"data.train_path={data}", f"output_dir={out}",
                                        "log.progress=false", "log.every=1", "data.max_length=64", "data.packing=off",
                                        "train.batch_size=4", *overrides])
    return run_sft(cfg)


def first_losses(out) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]


@pytest.mark.parametrize("bits", ["4bit", pytest.param("8bit", marks=pytest.mark.slow)])  # 8-bit: `make test-slow`
def test_qlora_trains_adapters_on_quantised_weights(tiny_dir, train_file, tmp_path, bits):
    """The base's linear layers are bitsandbytes' (frozen), only LoRA weights train, the first loss
    (before any update) is full-precision LoRA's to within the quantisation error (2%), training
    lowers it, and the adapter saved loads on the full-precision base."""
    from alignkit.config.parts import ModelConfig, PeftConfig
    from alignkit.models import apply_peft, load_causal_lm
    from alignkit.models.loading import load_policy

    policy = apply_peft(load_policy(ModelConfig(path=str(tiny_dir), quantization=bits)), PeftConfig(method="lora"))
    layer = {"4bit": bnb.nn.Linear4bit, "8bit": bnb.nn.Linear8bitLt}[bits]
    assert any(isinstance(m, layer) for m in policy.modules())
    assert all("lora_" in n for n, p in policy.named_parameters() if p.requires_grad)

    args = ["train.max_steps=6", "optim.lr=1e-2", "peft.method=lora"]
    sft(tiny_dir, train_file, tmp_path / "lora", *args)
    adapter = sft(tiny_dir, train_file, tmp_path / bits, *args, f"model.quantization={bits}")
    plain, quantised = first_losses(tmp_path / "lora"), first_losses(tmp_path / bits)
    assert abs(quantised[0] - plain[0]) < 0.02 * plain[0]
    assert quantised[-1] < quantised[0] - 0.1
    assert isinstance(load_causal_lm(adapter).get_base_model().model.layers[0].self_attn.q_proj.base_layer,
                      torch.nn.Linear)


def test_quantisation_needs_lora_and_a_plain_model(tiny_dir, train_file, tmp_path):
    from alignkit.config import SFTConfig, load_config
    from alignkit.errors import ConfigError, ModelError
    from alignkit.models import load_causal_lm

    with pytest.raises(ConfigError, match="model.quantization=4bit trains LoRA adapters.*peft.method=lora"):
        load_config(SFTConfig, None, [f"model.path={tiny_dir}", f"data.train_path={train_file}",
                                      "model.quantization=4bit"])
    adapter = sft(tiny_dir, train_file, tmp_path / "a", "train.max_steps=1", "peft.method=lora")
    with pytest.raises(ModelError, match="not a LoRA adapter.*alignkit merge"):
        load_causal_lm(adapter, quantization="4bit")


def test_adamw_8bit_steps_like_adamw_and_keeps_8_bit_moments():
    """One step from the same gradient: a tensor of 8192 values (8-bit moments, blockwise quantised)
    moves as torch's AdamW moves it to within 1%; a tensor of 8 values (under bitsandbytes' 4096
    threshold, 32-bit moments) moves the same to rounding."""
    from alignkit.config.parts import OptimConfig
    from alignkit.training.optim import build_optimizer

    def step(name):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(128, 64, bias=True))
        opt = build_optimizer(model, OptimConfig(lr=1e-2, name=name, weight_decay=0.1))
        start = {n: p.detach().clone() for n, p in model.named_parameters()}
        model(torch.randn(4, 128)).square().sum().backward()
        opt.step()
        return {n: p.detach() - start[n] for n, p in model.named_parameters()}, opt

    ref, _ = step("adamw")
    got, opt = step("adamw_8bit")
    assert isinstance(opt, bnb.optim.AdamW8bit)
    assert torch.allclose(got["0.bias"], ref["0.bias"], rtol=1e-4, atol=1e-7)
    assert float((got["0.weight"] - ref["0.weight"]).norm() / ref["0.weight"].norm()) < 0.01
    states = [v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    assert any(t.dtype == torch.uint8 for t in states)


def test_adamw_8bit_resumes_as_if_never_stopped(tiny_dir, train_file, tmp_path):
    """The 8-bit state (bitsandbytes nests it in a dict) goes through the safetensors checkpoint:
    6 steps with a checkpoint at 3, resumed from it, end with identical weights."""
    args = ["train.max_steps=6", "checkpoint.save_every=3", "optim.lr=1e-2", "optim.name=adamw_8bit",
            "checkpoint.keep_last=5"]
    out = tmp_path / "run"
    straight = load_file(str(sft(tiny_dir, train_file, out, *args) / "model.safetensors"))
    shutil.rmtree(out / "model")
    shutil.rmtree(out / "checkpoints" / "step-000006")
    resumed = load_file(str(sft(tiny_dir, train_file, out, *args, "resume=true") / "model.safetensors"))
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_a_reward_model_trains_lora_and_its_head_on_a_4bit_backbone(tiny_dir, tokenizer):
    """The backbone's layers are 4-bit and frozen; LoRA and the fresh score head get gradients."""
    from alignkit.config.parts import PeftConfig
    from alignkit.models import apply_peft
    from alignkit.models.reward import RewardModel, load_reward_backbone

    model = RewardModel(apply_peft(load_reward_backbone(tiny_dir, quantization="4bit"), PeftConfig(method="lora"),
                                   task="SEQ_CLS"))
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    enc = tokenizer(["reverse the word stone", "upper-case the word river"], return_tensors="pt", padding=True)
    model(enc["input_ids"], enc["attention_mask"]).sum().backward()
    trained = {n for n, p in model.named_parameters() if p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0}
    assert any("score" in n for n in trained) and any("lora_B" in n for n in trained)
    assert all("lora_" in n or "score" in n for n, p in model.named_parameters() if p.requires_grad)
