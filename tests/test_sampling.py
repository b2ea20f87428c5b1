"""The hand-written sampling loop (rl/sampling.py) draws exactly what generate() draws under the same
seed: token for token, across model families, sampling settings, a shared prefill and early EOS."""

import pytest
import torch

from alignkit.models.generate import encode_prompts
from alignkit.rl.sampling import can_sample, reserve, sample_tokens
from alignkit.rl.shared_prompt import cache_arg, shared_prefill


def conversations() -> list[list[dict[str, str]]]:
    convs = [[{"role": "user", "content": f"Say something about the {w}, please."}] for w in ("pear", "stone", "river")]
    convs.append([{"role": "user", "content": "Hi."}])  # a shorter prompt: left padding in the batch
    return [c for c in convs for _ in range(3)]


def generate_tokens(model, ids, attention, max_new_tokens, eos_id, pad_id, temperature, top_p, top_k):
    from transformers import GenerationConfig

    config = GenerationConfig(do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k,
                              max_new_tokens=max_new_tokens, pad_token_id=pad_id, eos_token_id=eos_id,
                              repetition_penalty=1.0, no_repeat_ngram_size=0)
    return model.generate(input_ids=ids, attention_mask=attention, generation_config=config)[:, ids.shape[1]:]


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma", "gpt2"])
@pytest.mark.parametrize("settings", [(1.0, 1.0, 0), (0.7, 0.9, 0), (1.3, 1.0, 20)])
def test_same_tokens_as_generate(tiny_dirs, family, settings):
    from alignkit.models import load_causal_lm, load_tokenizer

    temperature, top_p, top_k = settings
    model = load_causal_lm(tiny_dirs[family]).eval()
    tokenizer = load_tokenizer(tiny_dirs[family])
    enc = encode_prompts(tokenizer, conversations())
    ids, att = enc["input_ids"], enc["attention_mask"]
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    torch.manual_seed(5)
    want = generate_tokens(model, ids, att, 14, eos, pad, temperature, top_p, top_k)
    torch.manual_seed(5)
    got = sample_tokens(model, ids, att, 14, eos, pad, temperature, top_p, top_k)
    assert torch.equal(got, want)
    torch.manual_seed(5)  # each prompt prefilled once for its rows: still the same draws
    shared = sample_tokens(model, ids, att, 14, eos, pad, temperature, top_p, top_k,
                           cache=shared_prefill(model, ids, att)[cache_arg()])
    assert torch.equal(shared, want)


def test_early_eos_pads_and_stops_as_generate_does(tiny_dir):
    """With EOS made likely (its logit raised by a hook), rows end at different steps: pad follows each row's
    EOS and the loop stops once every row has ended, with as many columns as generate returns."""
    from alignkit.models import load_causal_lm, load_tokenizer

    model = load_causal_lm(tiny_dir).eval()
    tokenizer = load_tokenizer(tiny_dir)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    bias = torch.zeros(model.config.vocab_size)
    bias[eos] = 4.0  # EOS about e^4 times likelier than a token of the same logit
    model.lm_head.register_forward_hook(lambda module, args, out: out + bias)
    enc = encode_prompts(tokenizer, conversations())
    ids, att = enc["input_ids"], enc["attention_mask"]
    torch.manual_seed(1)
    want = generate_tokens(model, ids, att, 40, eos, pad, 1.0, 1.0, 0)
    torch.manual_seed(1)
    got = sample_tokens(model, ids, att, 40, eos, pad)
    assert torch.equal(got, want)
    ended = (got == eos).any(1)
    assert ended.any() and got.shape[1] < 40  # the test means something: rows ended early
    first = (got == eos).long().argmax(1)
    for row, stop in zip(got[ended], first[ended]):
        assert (row[stop + 1:] == pad).all()


def test_reserved_cache_grows_in_place_and_past_its_room(tiny_dir):
    """reserve() gives the layers room: keys written in place, the same values as concatenation;
    past the room a layer falls back to growing by concatenation, still the same values."""
    from transformers.cache_utils import DynamicCache

    from alignkit.models import load_causal_lm

    model = load_causal_lm(tiny_dir).eval()
    ids = torch.randint(5, 100, (2, 6))
    with torch.no_grad():
        plain = model(input_ids=ids[:, :3], use_cache=True)[cache_arg()]
        roomy = model(input_ids=ids[:, :3], use_cache=True)[cache_arg()]
        assert isinstance(plain, DynamicCache)
        reserve(roomy, 4)  # room for one more position; the two after it overflow
        buffer = roomy.layers[0].key_buffer
        for t in range(3, 6):
            a = model(input_ids=ids[:, t:t + 1], past_key_values=plain, use_cache=True).logits
            b = model(input_ids=ids[:, t:t + 1], past_key_values=roomy, use_cache=True).logits
            assert torch.equal(a, b)
            if t == 3:
                assert roomy.layers[0].keys.data_ptr() == buffer.data_ptr()  # a view of the buffer
        for p, r in zip(plain.layers, roomy.layers):
            assert torch.equal(p.keys, r.keys) and torch.equal(p.values, r.values)
        assert roomy.get_seq_length() == 6


def test_can_sample(tiny_dir):
    """LoRA samples through the loop (adapters inside the layers); prefix tuning builds the cache
    itself, so it goes through generate()."""
    from peft import LoraConfig, PrefixTuningConfig, get_peft_model

    from alignkit.models import load_causal_lm

    assert can_sample(load_causal_lm(tiny_dir))
    assert can_sample(get_peft_model(load_causal_lm(tiny_dir), LoraConfig(r=2, target_modules=["q_proj", "v_proj"])))
    prefix = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2)
    assert not can_sample(get_peft_model(load_causal_lm(tiny_dir), prefix))
