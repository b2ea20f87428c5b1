"""The reward-model stage on a tiny model and the demo world's rankings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignkit.config import RMConfig, WorldConfig, load_config
from alignkit.errors import ConfigError, ModelError
from alignkit.stages.rm import run_rm
from alignkit.world.datasets import write_world_data


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    write_world_data(out, WorldConfig(sft_examples=50, ranking_prompts=200, rl_prompts=40, eval_prompts=20))
    return out


def rm(model_dir, world_dir, out, *overrides):
    cfg = load_config(RMConfig, None, [f"model.path={model_dir}", f"data.train_path={world_dir / 'rankings.jsonl'}",
                                       f"output_dir={out}", "data.max_length=96", "log.progress=false", "log.every=5",
                                       "train.batch_size=16", "optim.lr=2e-3", *overrides])
    return run_rm(cfg)


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_rm_learns_preferences_and_saves_a_transformers_model(tiny_dir, world_dir, tmp_path):
    out = tmp_path / "rm"
    model_dir = rm(tiny_dir, world_dir, out, "train.max_steps=60", "train.eval_every=30",
                   f"normalize.prompts_path={world_dir / 'rl_prompts.jsonl'}", "normalize.samples=20",
                   "normalize.max_new_tokens=8")
    evals = [r["eval_accuracy"] for r in rows(out) if "eval_accuracy" in r]
    assert len(evals) == 3 and evals[-1] > 0.75 and evals[-1] > evals[0]
    assert {"eval_accuracy/safety", "eval_accuracy/skills"} <= set(rows(out)[-1])  # per source
    norm = json.loads((model_dir / "reward_normalization.json").read_text())
    assert norm["normalized_on"]["n"] == 20 and norm["eval_accuracy"] == evals[-1]

    from transformers import AutoModelForSequenceClassification

    from alignkit.models import load_tokenizer
    from alignkit.models.reward import RewardModel, load_reward_model

    hf = AutoModelForSequenceClassification.from_pretrained(model_dir)  # plain transformers loads it
    assert hf.config.num_labels == 1
    loaded, offset = load_reward_model(model_dir)
    assert offset == norm["offset"]
    # The offset's value: the mean reward of the policy's greedy 8-token answers to the first 20 RL
    # prompts (the policy is model.path here), recomputed outside the stage.
    from alignkit.data.records import read_records
    from alignkit.models import load_causal_lm
    from alignkit.models.generate import generate_responses
    from alignkit.models.reward import score_conversations

    prompts = [[{"role": "user", "content": r.row["prompt"]}] for r in read_records(world_dir / "rl_prompts.jsonl")[:20]]
    answers = generate_responses(load_causal_lm(tiny_dir), load_tokenizer(tiny_dir), prompts, 8, batch_size=64)
    mean = float(score_conversations(loaded, load_tokenizer(model_dir), prompts, answers, 96).mean())  # data.max_length
    assert offset == pytest.approx(mean, abs=1e-5) and offset != 0.0
    tok = load_tokenizer(model_dir)
    ids = torch.tensor([tok("<|user|>\nhi\n<|assistant|>\nyo<|eos|>").input_ids])
    with torch.no_grad():
        assert torch.allclose(RewardModel(hf)(ids, torch.ones_like(ids)), loaded(ids, torch.ones_like(ids)))


def test_rm_resume_equals_uninterrupted(tiny_dir, world_dir, tmp_path):
    args = ["train.max_steps=6", "checkpoint.save_every=3", "checkpoint.keep_last=5"]
    out = tmp_path / "r"
    straight = load_file(str(rm(tiny_dir, world_dir, out, *args) / "model.safetensors"))
    shutil.rmtree(out / "model")
    shutil.rmtree(out / "checkpoints" / "step-000006")
    resumed = load_file(str(rm(tiny_dir, world_dir, out, *args, "resume=true") / "model.safetensors"))
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_rm_with_lora_saves_a_merged_model(tiny_dir, world_dir, tmp_path):
    out = tmp_path / "lora"
    model_dir = rm(tiny_dir, world_dir, out, "train.max_steps=10", "peft.method=lora", "peft.lora_r=4")
    weights = load_file(str(model_dir / "model.safetensors"))
    assert "score.weight" in weights and not any("lora" in k for k in weights)
    losses = [r["loss"] for r in rows(out) if "loss" in r]
    assert losses[-1] < losses[0]


def test_rm_refuses_an_adapter_directory(tiny_dir, world_dir, tmp_path):
    from alignkit.config import SFTConfig
    from alignkit.stages.sft import run_sft

    adapter = run_sft(load_config(SFTConfig, None, [
        f"model.path={tiny_dir}", f"data.train_path={world_dir / 'sft.jsonl'}", f"output_dir={tmp_path / 'sft'}",
        "peft.method=lora", "train.max_steps=1", "log.progress=false"]))
    with pytest.raises(ModelError, match="is a LoRA adapter; merge it first"):
        rm(adapter, world_dir, tmp_path / "rm", "train.max_steps=1")


def test_encoder_backbone_trains_through_the_stage(tokenizer, world_dir, tmp_path, capsys):
    """A BERT-style encoder built in code (with the tiny tokenizer) trains as a reward model: its own
    [CLS] pooling, no packing (auto turns it off for encoders), and the held-out accuracy is reported."""
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=128, num_labels=1, pad_token_id=tokenizer.pad_token_id, max_position_embeddings=256)
    BertForSequenceClassification(cfg).save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    out = tmp_path / "rm"
    rm(tmp_path / "bert", world_dir, out, "train.max_steps=80", "optim.lr=3e-3", "log.every=10")
    losses = [r["loss"] for r in rows(out) if "loss" in r]
    assert losses[-1] < 0.9 * losses[0]
    assert rows(out)[-1]["eval_accuracy"] > 0.6
    assert "packing off" in capsys.readouterr().err  # auto: an encoder's scores change when packed


def test_keep_best_saves_the_weights_of_the_best_evaluation(tiny_dir, tmp_path):
    """keep_best=eval_accuracy/correctness on a world with correctness rows: evaluated every 4 steps,
    the saved model is the one of the evaluation with the highest correctness accuracy (the first
    such, ties kept), its figures stored beside the offset; a per-source figure the data lacks is
    named in the error."""
    from safetensors.torch import load_file

    from alignkit.models.reward import load_reward_model

    world = tmp_path / "world"
    write_world_data(world, WorldConfig(sft_examples=50, ranking_prompts=60, correctness_prompts=120, rl_prompts=20,
                                        eval_prompts=20))
    out = tmp_path / "rm"
    model_dir = rm(tiny_dir, world, out, "train.max_steps=16", "train.eval_every=4", "data.eval_fraction=0.3",
                   "keep_best=eval_accuracy/correctness", "optim.lr=5e-3")
    evals = [r for r in rows(out) if "eval_accuracy/correctness" in r]
    assert [r["step"] for r in evals] == [0, 4, 8, 12, 16]
    best = max(evals, key=lambda r: r["eval_accuracy/correctness"])  # max keeps the first of equal values
    norm = json.loads((model_dir / "reward_normalization.json").read_text())
    assert norm["step"] == best["step"] and norm["eval_accuracy/correctness"] == best["eval_accuracy/correctness"]
    kept, _ = load_reward_model(model_dir)
    saved = load_file(str(out / "best.safetensors"))
    for key, value in kept.state_dict().items():
        assert torch.equal(value, saved[key]), key
    with pytest.raises(ConfigError, match="keep_best=eval_accuracy/nothing, but the held-out figures are"):
        rm(tiny_dir, world, tmp_path / "bad", "train.max_steps=2", "train.eval_every=1", "data.eval_fraction=0.3",
           "keep_best=eval_accuracy/nothing")


def test_ranking_batches_forward_each_response_once_with_the_pairwise_loss_and_gradient(tiny_dir, world_dir):
    """batch_by=ranking. The world's rankings have 4 candidates, ordered strictly: C(4,2) = 6 pairs
    each. Three rankings give 18 pairs; collated as pairs that is 36 sequences, shared it is the 12
    distinct responses. The mean loss over the 18 pairs and its gradient are the same either way (to
    float tolerance): the same objective for a third of the forward passes."""
    from alignkit.data.reward import build_reward_data
    from alignkit.models import load_tokenizer
    from alignkit.models.reward import RewardModel, load_reward_backbone, packing_is_exact_for_rewards
    from alignkit.stages.rm import batch_units, collate_pairs, model_inputs

    tok = load_tokenizer(tiny_dir)
    train, _, _ = build_reward_data(str(world_dir / "rankings.jsonl"), "", 0.1, tok, 96, seed=0)
    units = batch_units(train, "ranking")
    assert batch_units(train, "pair") == [[i] for i in range(len(train))]
    assert sum(map(len, units)) == len(train) and all(len({train[i].group for i in u}) == 1 for u in units)
    three = [u for u in units if len(u) == 6][:3]
    pairs = [train[i] for u in three for i in u]
    torch.manual_seed(0)
    hf = load_reward_backbone(str(tiny_dir))
    hf.config.pad_token_id = tok.pad_token_id
    model = RewardModel(hf)
    assert packing_is_exact_for_rewards(model, len(tok))
    results = {}
    for share in (False, True):
        for rows_ in (0, 96):  # padded and packed
            batch = collate_pairs(pairs, tok.pad_token_id, rows_, share=share)
            n_seqs = len(batch["ends"]) if rows_ else len(batch["input_ids"])
            assert n_seqs == (12 if share else 36)
            model.zero_grad()
            scores = model(**model_inputs(batch))
            loss = -torch.nn.functional.logsigmoid(scores[batch["chosen"]] - scores[batch["rejected"]]).mean()
            loss.backward()
            results[share, rows_] = (loss.detach(), [p.grad.clone() for p in model.parameters()])
    ref_loss, ref_grads = results[False, 0]
    for key, (loss, grads) in results.items():
        assert torch.allclose(loss, ref_loss, atol=1e-6), key
        for g, r in zip(grads, ref_grads):
            assert torch.allclose(g, r, atol=1e-5), key


def test_rm_by_ranking_counts_rankings_per_batch_and_learns(tiny_dir, world_dir, tmp_path):
    """train.batch_size=4 rankings: each step sees every pair of 4 rankings (up to 6 each: at most 24
    pairs a step, 120 in a log window of 5 steps; exactly the pairs of the rankings drawn), and the
    model learns the held-out preferences."""
    from alignkit.data.reward import build_reward_data
    from alignkit.models import load_tokenizer
    from alignkit.stages.rm import batch_units
    from alignkit.training.batching import global_batch

    out = tmp_path / "rm"
    rm(tiny_dir, world_dir, out, "batch_by=ranking", "train.batch_size=4", "train.max_steps=80", "train.eval_every=40")
    train, _, _ = build_reward_data(str(world_dir / "rankings.jsonl"), "", 0.1, load_tokenizer(tiny_dir), 96, seed=0)
    units = batch_units(train, "ranking")
    drawn = [sum(len(units[u]) for u in global_batch(len(units), step, 4, 0)) for step in range(80)]
    logged = [r["pairs"] for r in rows(out) if "pairs" in r]
    assert logged == [sum(drawn[k:k + 5]) for k in range(0, 80, 5)] and max(logged) <= 120 and min(logged) >= 100
    evals = [r["eval_accuracy"] for r in rows(out) if "eval_accuracy" in r]
    assert evals[-1] > 0.75 and evals[-1] > evals[0]
