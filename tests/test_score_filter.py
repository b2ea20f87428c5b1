"""Reward-filtered SFT data (data/score_filter.py): which rows are kept, what the report says, and that
the scores are the reward model's own."""

from __future__ import annotations

import json

import pytest
import torch

from alignkit.config import DataConfig
from alignkit.data import build_sft_data
from alignkit.data.formats import Sample
from alignkit.data.quality import DataReport
from alignkit.data.score_filter import drop_reason, keep_scored, score_samples, split_last_response
from alignkit.models import load_tokenizer
from alignkit.models.reward import load_reward_model, score_conversations
from conftest import task_rows, write_jsonl


def chat(*turns: str, where: str = "f.jsonl, line 1") -> Sample:
    roles = ["user", "assistant"] * len(turns)
    return Sample(tuple({"role": r, "content": t} for r, t in zip(roles, turns)), where)


def test_keep_scored_drops_below_the_floor_and_counts_each_with_its_line():
    """Scores 0.5, -0.1, 0.0, -2 with floor 0: rows 1 and 3 (0-based) fall below it; a score equal to
    the floor is kept."""
    samples = [chat("q", "a", where=f"f.jsonl, line {i + 1}") for i in range(4)]
    report = DataReport()
    kept = keep_scored(samples, [0.5, -0.1, 0.0, -2.0], 0.0, "train", report)
    assert [s.where for s in kept] == ["f.jsonl, line 1", "f.jsonl, line 3"]
    assert report.dropped["train"] == {"reward model score below 0": 2}
    assert report.examples["train: reward model score below 0"] == ["f.jsonl, line 2", "f.jsonl, line 4"]
    assert drop_reason(0.0, cost=True) == "cost model's cost above 0" and drop_reason(-1.5, cost=True).endswith("above 1.5")
    with pytest.raises(ValueError, match="3 scores for 4 samples"):
        keep_scored(samples, [0.0] * 3, 0.0, "train", report)


def test_the_scored_response_is_the_last_assistant_turn_with_everything_before_as_prompt():
    prompt, response = split_last_response(chat("q1", "a1", "q2", "a2"))
    assert [m["content"] for m in prompt] == ["q1", "a1", "q2"] and response == "a2"


def test_scores_are_the_reward_models_minus_its_offset(reward_dir):
    """score_samples = score_conversations(...) - 0.25, the offset the fixture recorded."""
    samples = [chat("Reverse the word pear.", "raep"), chat("Upper-case the word fig.", "FIG")]
    model, offset = load_reward_model(reward_dir)
    raw = score_conversations(model, load_tokenizer(reward_dir), [[{"role": "user", "content": s.messages[0]["content"]}]
                                                                  for s in samples], ["raep", "FIG"])
    assert offset == 0.25
    assert torch.allclose(score_samples(samples, str(reward_dir)), raw.double() - 0.25, atol=1e-6)


def test_build_sft_data_filters_before_the_split_and_reports_why(tmp_path, tokenizer, reward_dir):
    """With the floor at the median score, half the distinct rows go (ties aside), every one counted
    under the reason; with no model nothing is scored."""
    path = write_jsonl(tmp_path / "train.jsonl", task_rows())
    plain = build_sft_data(DataConfig(train_path=str(path), eval_fraction=0.0), tokenizer, seed=0)
    from alignkit.data.sft import clean_samples, load_samples

    samples = clean_samples(load_samples(str(path), "auto"), "train", DataReport(), True)
    median = float(score_samples(samples, str(reward_dir), max_length=512).median())
    cfg = DataConfig(train_path=str(path), eval_fraction=0.25, filter_model=str(reward_dir), filter_min_score=median)
    data = build_sft_data(cfg, tokenizer, seed=0)
    dropped = data.report.dropped["train"][drop_reason(median)]
    assert 0 < dropped <= len(plain.train) // 2
    assert len(data.train) + len(data.eval) == len(plain.train) - dropped
    assert json.loads(json.dumps(data.report.as_dict()))["train"]["dropped"] == {drop_reason(median): dropped}


def test_a_cost_models_score_is_its_negated_cost(reward_dir, tmp_path):
    """The same network saved as a cost model (objective=cost, offset 0): score = -cost, so the floor 0
    keeps what it judges safe (cost <= 0)."""
    import shutil

    cost_dir = tmp_path / "cost"
    shutil.copytree(reward_dir, cost_dir)
    (cost_dir / "reward_normalization.json").write_text(json.dumps({"offset": 0.0, "normalized_on": None,
                                                                    "objective": "cost"}))
    samples = [chat("Reverse the word pear.", "raep"), chat("Upper-case the word fig.", "FIG")]
    as_reward = score_samples(samples, str(reward_dir))  # minus the offset 0.25
    assert torch.allclose(score_samples(samples, str(cost_dir)), -(as_reward + 0.25), atol=1e-6)
