"""Prompts shared by a group (rl/shared_prompt.py): each distinct prompt runs once and its rows use
its cache; the logits, the gradients and the samples are those of running every row whole."""

import pytest
import torch

from alignkit.rl.rollout import Rollout, response_logprobs, response_mask_from, sample_rollout
from alignkit.rl.shared_prompt import can_share, prompt_groups, response_logits


def test_prompt_groups_by_hand():
    """Rows A B A C B (C has A's ids with another mask): the distinct prompts' first rows are 0, 1
    and 3, and each row points at its own prompt's entry, whatever the order."""
    a, b = [5, 6, 7], [0, 8, 9]
    ids = torch.tensor([a, b, a, a, b])
    mask = torch.tensor([[1, 1, 1], [0, 1, 1], [1, 1, 1], [0, 1, 1], [0, 1, 1]])
    first, inverse = prompt_groups(ids, mask)
    assert sorted(first.tolist()) == [0, 1, 3]
    assert first[inverse].tolist() == [0, 1, 0, 3, 1]


def grouped_rollout(tokenizer, groups: int = 3, n: int = 4, width: int = 6, seed: int = 0) -> Rollout:
    """Left-padded prompts of different lengths, n rows each (shuffled), random responses with an
    EOS in some rows (the tokens after it masked as sampling leaves them)."""
    g = torch.Generator().manual_seed(seed)
    prompts = [tokenizer(f"Say something about item {k}" + " please" * k, add_special_tokens=False)["input_ids"]
               for k in range(groups)]
    p = max(len(x) for x in prompts)
    order = torch.randperm(groups * n, generator=g)
    rows = [prompts[int(i) // n] for i in order]
    ids = torch.tensor([[tokenizer.pad_token_id] * (p - len(x)) + x for x in rows])
    att = torch.tensor([[0] * (p - len(x)) + [1] * len(x) for x in rows])
    responses = torch.randint(5, len(tokenizer) - 1, (len(rows), width), generator=g)
    responses[1, min(2, width - 1)] = tokenizer.eos_token_id
    responses[len(rows) - 1, 0] = tokenizer.eos_token_id
    mask, ended = response_mask_from(responses, tokenizer.eos_token_id)
    return Rollout(torch.cat([ids, responses], 1), torch.cat([att, mask], 1), p, mask, ended)


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma", "gpt2"])
def test_shared_logits_and_gradients_match_whole_rows(tiny_dirs, family):
    """The same logits for every scored position (to float rounding) and the same gradient: GPT-2's
    learned positions and Gemma's scaled embeddings included."""
    from alignkit.models import load_causal_lm, load_tokenizer

    from alignkit.models.value import disable_dropout

    model, tok = load_causal_lm(tiny_dirs[family]), load_tokenizer(tiny_dirs[family])
    disable_dropout(model)  # as the RL stages do (GPT-2 ships with dropout)
    model.train()
    roll = grouped_rollout(tok)
    out = {}
    for share in (False, True):
        model.zero_grad()
        logits = response_logits(model, roll, share)
        (logits.float().log_softmax(-1).gather(-1, roll.responses.unsqueeze(-1)).squeeze(-1)
         * roll.response_mask).sum().backward()
        out[share] = logits.detach(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    keep = roll.response_mask.bool()
    assert out[True][0].shape == out[False][0].shape
    assert torch.allclose(out[True][0][keep], out[False][0][keep], atol=1e-5)
    g0, g1 = out[False][1], out[True][1]
    assert float((g1 - g0).norm() / g0.norm()) < 1e-5


def test_one_response_token_and_no_repeats(tiny_dir, tokenizer):
    """A one-token response and rows without repeats: the shared path runs the same passes (so
    processes under ZeRO-3 stay in step) and gives the same numbers."""
    from alignkit.models import load_causal_lm

    model = load_causal_lm(tiny_dir).eval()
    roll = grouped_rollout(tokenizer, width=1)
    with torch.no_grad():
        assert torch.allclose(response_logits(model, roll, True), response_logits(model, roll, False), atol=1e-5)
        single = grouped_rollout(tokenizer, groups=3, n=1)
        assert torch.allclose(response_logprobs(model, single, share=True), response_logprobs(model, single), atol=1e-5)


def test_sampling_with_a_shared_prefill_draws_the_same_tokens(tiny_dir, tokenizer):
    """Prefilling each prompt once for its group and sampling with the same seed gives the rows the
    unshared generate gives."""
    from alignkit.models import load_causal_lm

    model = load_causal_lm(tiny_dir).eval()
    convs = [[{"role": "user", "content": f"Say something about the {w}."}] for w in ("pear", "stone", "river")]
    convs = [c for c in convs for _ in range(4)]
    rolls = []
    for share in (False, True):
        torch.manual_seed(3)
        rolls.append(sample_rollout(model, tokenizer, convs, 12, temperature=1.0, share=share))
    assert torch.equal(rolls[0].sequences, rolls[1].sequences)
    assert torch.equal(rolls[0].response_mask, rolls[1].response_mask)


def test_can_share(tiny_dir):
    """LoRA shares (the adapters sit inside the layers); prefix tuning owns the cache and gradient
    checkpointing turns the cache off in training, so neither does."""
    from peft import LoraConfig, PrefixTuningConfig, get_peft_model

    from alignkit.models import load_causal_lm

    assert can_share(get_peft_model(load_causal_lm(tiny_dir), LoraConfig(r=2, target_modules=["q_proj", "v_proj"])))
    prefix = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2)
    assert not can_share(get_peft_model(load_causal_lm(tiny_dir), prefix))
    model = load_causal_lm(tiny_dir)
    model.gradient_checkpointing_enable()
    assert not can_share(model)
