"""KTO in `alignkit dpo loss=kto`: the loss by hand, the unpaired data, and a run that learns which
completions are desirable."""

import json
import math

import pytest
import torch

from alignkit.errors import DataError
from alignkit.losses.kto import kto_loss, kto_reference_point

from conftest import WORDS, write_jsonl


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_kto_loss_by_hand():
    """r = logp - ref = (-1) - (-2) = 1, z0 = 0.5, beta 0.1: desirable 1 - sigmoid(0.05) = 0.487503,
    undesirable 1 - sigmoid(-0.05) = 0.512497; weights scale each side; at r = z0 = 0 both are 1/2."""
    logp, ref = torch.tensor([-1.0, -1.0]), torch.tensor([-2.0, -2.0])
    desirable = torch.tensor([True, False])
    got = kto_loss(logp, ref, desirable, torch.tensor(0.5), 0.1)
    assert got.tolist() == pytest.approx([1 - sigmoid(0.05), 1 - sigmoid(-0.05)], abs=1e-6)
    assert got.tolist() == pytest.approx([0.487503, 0.512497], abs=1e-6)
    weighted = kto_loss(logp, ref, desirable, torch.tensor(0.5), 0.1, desirable_weight=2.0, undesirable_weight=0.5)
    assert weighted.tolist() == pytest.approx([2 * 0.487503, 0.5 * 0.512497], abs=1e-6)
    assert kto_loss(ref, ref, desirable, torch.tensor(0.0), 0.1).tolist() == [0.5, 0.5]


def test_the_reference_point_is_the_clamped_mismatched_kl():
    """z0 = max(0, mean(logp - ref)): (0.5 + 1.5) / 2 = 1; a policy below the reference gives 0."""
    assert float(kto_reference_point(torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -3.5]))) == 1.0
    assert float(kto_reference_point(torch.tensor([-3.0]), torch.tensor([-1.0]))) == 0.0


def fruit_rows():
    good = [{"prompt": f"Name a fruit like {w}.", "completion": "pear", "label": True} for w in WORDS]
    bad = [{"prompt": f"Name a fruit like {w}.", "completion": "stone", "label": False} for w in WORDS]
    return good + bad


def test_unpaired_rows_pairs_and_bad_labels(tokenizer, tmp_path):
    from alignkit.data.kto import build_kto_data

    rows = fruit_rows()[:3] + [{"prompt": "q", "chosen": "yes", "rejected": "no"}]
    train, held, report = build_kto_data(str(write_jsonl(tmp_path / "a.jsonl", rows)), "", 0.0, tokenizer, 64, 0)
    assert sorted(e.desirable for e in train) == [False, True, True, True, True] and not held
    for e in train:  # the mismatched sequence: the same prompt, another prompt's completion
        assert e.kl_ids[:e.kl_start] == e.ids[:e.start]
    assert sum(e.kl_ids != e.ids for e in train) >= 2  # "yes"/"no" borrow a fruit answer (and one gives theirs)
    with pytest.raises(DataError, match=r"b.jsonl, line 1: field 'label' must be true \(desirable\) or false"):
        build_kto_data(str(write_jsonl(tmp_path / "b.jsonl", [{**rows[0], "label": "yes"}])), "", 0.0, tokenizer, 64, 0)
    with pytest.raises(DataError, match="every training example is labelled desirable"):
        build_kto_data(str(write_jsonl(tmp_path / "c.jsonl", fruit_rows()[:4])), "", 0.0, tokenizer, 64, 0)


def test_kto_learns_which_completions_are_desirable(fruit_policy, tmp_path):
    """The first loss is exactly 1/2 (policy = reference, z0 = 0); training raises the implicit reward
    of the desirable completion ('pear') above the undesirable one ('stone') on held-out prompts."""
    from alignkit.config import DPOConfig, load_config
    from alignkit.stages.dpo import run_dpo

    data = write_jsonl(tmp_path / "kto.jsonl", fruit_rows())
    out = tmp_path / "run"
    run_dpo(load_config(DPOConfig, None, [f"model.path={fruit_policy}", f"data.train_path={data}", "loss=kto",
                                          f"output_dir={out}", "train.max_steps=30", "optim.lr=1e-3",
                                          "train.batch_size=8", "log.every=1", "log.progress=false",
                                          "data.eval_fraction=0.25", "beta=0.5"]))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "z0" in r]
    assert train[0]["loss"] == pytest.approx(0.5, abs=1e-6) and train[0]["z0"] == 0.0
    final = [r for r in rows if "eval_reward_gap" in r][-1]
    assert final["eval_reward_desirable"] > 0 > final["eval_reward_undesirable"]
    assert final["eval_reward_gap"] > 1.0
    assert json.loads((out / "data_report.json").read_text())["train"]["kept"] > 0
