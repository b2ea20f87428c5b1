"""Memory levers: gradient checkpointing gives the gradients of a plain backward pass, on every kind
of model a stage trains (a causal LM, full and LoRA; PPO's policy-and-value; a reward model)."""

import json

import torch

from alignkit.models.memory import enable_gradient_checkpointing, hf_models


def gradients(module, loss_fn) -> dict[str, torch.Tensor]:
    module.zero_grad()
    loss_fn(module).backward()
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def assert_same_gradients(make, loss_fn):
    """make() -> a fresh module (the same weights each call); its gradients with and without."""
    plain = gradients(make(), loss_fn)
    module = make()
    assert enable_gradient_checkpointing(module) >= 1
    checkpointed = gradients(module, loss_fn)
    assert plain.keys() == checkpointed.keys() and plain
    for name in plain:
        assert torch.allclose(plain[name], checkpointed[name], rtol=1e-5, atol=1e-7), name


def batch(tokenizer):
    enc = tokenizer(["reverse the word stone", "upper-case the word river please"], return_tensors="pt",
                    padding=True)
    return enc["input_ids"], enc["attention_mask"]


def test_causal_lm_full_and_lora(tiny_dir, tokenizer):
    from alignkit.config.parts import PeftConfig
    from alignkit.models import apply_peft, load_causal_lm

    ids, mask = batch(tokenizer)

    def lm_loss(m):
        m.train()
        return m(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100), use_cache=False).loss

    assert_same_gradients(lambda: load_causal_lm(tiny_dir), lm_loss)
    torch.manual_seed(0)
    lora = PeftConfig(method="lora")

    def make_lora():
        torch.manual_seed(0)  # the same fresh adapter weights each time
        return apply_peft(load_causal_lm(tiny_dir), lora)

    assert_same_gradients(make_lora, lm_loss)


def test_ppo_policy_and_value_and_a_reward_model(tiny_dir, tokenizer):
    from alignkit.models import load_causal_lm
    from alignkit.models.reward import RewardModel, load_reward_backbone
    from alignkit.models.value import PolicyAndValue, hidden_size

    ids, mask = batch(tokenizer)

    def make_actor():
        torch.manual_seed(0)
        policy = load_causal_lm(tiny_dir)
        return PolicyAndValue(policy, None, hidden_size(policy))

    def actor_loss(m):
        logits, values = m(ids, mask, prompt_width=3)
        return logits.float().logsumexp(-1).mean() + values.square().mean()

    assert_same_gradients(make_actor, actor_loss)

    def make_reward():
        torch.manual_seed(0)
        return RewardModel(load_reward_backbone(tiny_dir))

    assert len(hf_models(make_reward())) == 1
    assert_same_gradients(make_reward, lambda m: m(ids, mask).square().sum())


def test_sft_with_checkpointing_logs_the_losses_of_sft_without(tiny_dir, train_file, tmp_path):
    """Three steps each way: the same losses (to float rounding); the lever is in the saved config."""
    from alignkit.config import SFTConfig, load_config
    from alignkit.stages.sft import run_sft

    rows = {}
    for on in (False, True):
        out = tmp_path / f"ckpt-{on}"
        cfg = load_config(SFTConfig, None, [f"model.path={tiny_dir}", f"data.train_path={train_file}",
                                            f"output_dir={out}", "train.max_steps=3", "log.every=1",
                                            "log.progress=false", "optim.lr=1e-3", "data.packing=off",
                                            f"train.gradient_checkpointing={str(on).lower()}"])
        run_sft(cfg)
        rows[on] = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
                    if '"loss"' in line]
    assert len(rows[True]) == 3
    assert torch.allclose(torch.tensor(rows[True]), torch.tensor(rows[False]), rtol=1e-5)
    assert "gradient_checkpointing: true" in (tmp_path / "ckpt-True" / "config.yaml").read_text()
