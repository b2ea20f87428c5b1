"""Reward models: the score is read at the last real token for right- and left-padded batches;
decoder and encoder backbones both give one score per sequence and train."""

from __future__ import annotations

import pytest
import torch

from alignkit.models.reward import RewardModel, last_real_index, load_reward_backbone


def test_last_real_index_right_and_left_padding():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_real_index(right).tolist() == [2, 4]
    assert last_real_index(left).tolist() == [4, 4]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_padded_scores_equal_unpadded_scores(tiny_dirs, arch):
    """Pad id = EOS = the last real token: scores still come from the last *real* position, the same
    as running each sequence alone, with right or left padding."""
    model = RewardModel(load_reward_backbone(tiny_dirs[arch])).eval()
    eos = model.hf.config.eos_token_id
    seqs = [[5, 9, 12, eos], [7, 8, eos]]
    with torch.no_grad():
        alone = [model(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long)).item() for s in seqs]
        for side in ("right", "left"):
            ids = torch.full((2, 4), eos)
            mask = torch.zeros(2, 4, dtype=torch.long)
            for i, s in enumerate(seqs):
                span = slice(0, len(s)) if side == "right" else slice(4 - len(s), 4)
                ids[i, span] = torch.tensor(s)
                mask[i, span] = 1
            batch = model(ids, mask).tolist()
            assert batch == pytest.approx(alone, abs=1e-5), side


def test_encoder_backbone_scores_and_trains(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     num_labels=1, pad_token_id=0)
    BertForSequenceClassification(cfg).save_pretrained(tmp_path / "bert")
    model = RewardModel(load_reward_backbone(tmp_path / "bert"))
    assert not model.decoder
    ids = torch.tensor([[2, 5, 6, 0], [2, 7, 8, 9]])
    mask = (ids != 0).long()
    from alignkit.losses import pairwise_ranking_loss

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(20):
        scores = model(ids, mask)
        loss = pairwise_ranking_loss(scores[:1], scores[1:]).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma", "gpt2"])
def test_packed_scores_equal_padded_scores(tiny_dirs, arch):
    """Six sequences packed into rows of 16 tokens (position ids restarting) score exactly as when
    padded into one batch: packing removes the padding, not the isolation between sequences."""
    from alignkit.models.reward import pack_sequences, packing_is_exact_for_rewards

    model = RewardModel(load_reward_backbone(tiny_dirs[arch])).eval()
    assert packing_is_exact_for_rewards(model, 300)
    gen = torch.Generator().manual_seed(2)
    seqs = [torch.randint(10, 300, (n,), generator=gen).tolist() for n in (9, 3, 6, 12, 5, 7)]
    packed = pack_sequences(seqs, 16, pad_id=0)
    assert packed["input_ids"].shape[0] < len(seqs)  # really shares rows
    ids = torch.zeros(len(seqs), 12, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
    with torch.no_grad():
        assert torch.allclose(model(**packed), model(ids, mask), atol=1e-5)
