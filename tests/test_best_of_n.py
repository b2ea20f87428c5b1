"""Best-of-n: the best-of-k estimator against hand values and brute force; the stage writes SFT data
whose every row is its prompt's best eligible sample, and a reward curve that rises with k."""

from __future__ import annotations

import itertools
import json
import math
import random

import pytest
import torch

from alignkit.rl.selection import best_of_k_weights, expected_best_of_k, pick_best


def test_best_of_k_hand_values():
    """Scores 1, 2, 3. k=1: the mean, 2. k=2: pairs (1,2) (1,3) (2,3) have maxima 2, 3, 3 -> 8/3.
    k=3: the maximum, 3. Weights for n=3, k=2: C(0,1)/3, C(1,1)/3, C(2,1)/3 = 0, 1/3, 2/3."""
    s = torch.tensor([[3.0, 1.0, 2.0]])
    assert [expected_best_of_k(s, k).item() for k in (1, 2, 3)] == pytest.approx([2.0, 8 / 3, 3.0])
    assert best_of_k_weights(3, 2).tolist() == pytest.approx([0.0, 1 / 3, 2 / 3])


def test_best_of_k_matches_enumeration_of_subsets():
    rng = random.Random(0)
    scores = torch.tensor([[rng.gauss(0, 1) for _ in range(6)] for _ in range(4)])
    for k in range(1, 7):
        brute = [sum(max(c) for c in itertools.combinations(row.tolist(), k)) / math.comb(6, k) for row in scores]
        assert expected_best_of_k(scores, k).tolist() == pytest.approx(brute)
    with pytest.raises(ValueError, match="k must be in"):
        best_of_k_weights(3, 4)


def test_pick_best_skips_ineligible_unless_none_is():
    scores = torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]])
    eligible = torch.tensor([[True, False, True], [False, False, False]])
    assert pick_best(scores).tolist() == [1, 0]
    assert pick_best(scores, eligible).tolist() == [2, 0]  # the unended 0.9 is passed over


def test_ks_for():
    from alignkit.stages.best_of_n import ks_for

    assert ks_for(8) == [1, 2, 4, 8] and ks_for(6) == [1, 2, 4, 6] and ks_for(1) == [1]


def test_stage_writes_the_best_sample_per_prompt_as_sft_data(tiny_dir, reward_dir, tmp_path):
    """The tiny model as policy, and as the backbone of a reward model with a fresh head: every data
    row is its prompt's best-scored ended sample, the curve rises with k, SFT reads the output."""
    from alignkit.config import BestOfNConfig, DataConfig, load_config
    from alignkit.data import build_sft_data
    from alignkit.models import load_tokenizer
    from alignkit.stages.best_of_n import run_best_of_n

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Reverse the word {w}."}) + "\n"
                               for w in ("apple", "pear", "plum", "fig", "lime")))
    out = tmp_path / "bon"
    cfg = load_config(BestOfNConfig, None, [f"model.path={tiny_dir}", f"reward_model={reward_dir}",
                                            f"prompts_path={prompts}", f"output_dir={out}", "n=6",
                                            "sampling.max_new_tokens=6", "batch_size=2", "require_eos=false"])
    data = run_best_of_n(cfg)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == len(samples) == 5
    for row, sample in zip(rows, samples):
        assert row["messages"][:-1] == sample["messages"]
        assert row["messages"][-1] == {"role": "assistant", "content": sample["responses"][sample["best"]]}
        assert row["reward"] == pytest.approx(max(sample["scores"]))
    report = json.loads((out / "report.json").read_text())
    # Against a plain loop over the saved samples: best of k = the mean, over every k-subset of a
    # prompt's 6 scores, of the subset's maximum; averaged over prompts.
    from itertools import combinations
    from statistics import mean

    expected = {str(k): mean(mean(max(c) for c in combinations(smp["scores"], k)) for smp in samples) for k in (1, 2, 4, 6)}
    assert report["curve"] == pytest.approx(expected, abs=1e-6)
    assert report["selected_mean_reward"] == pytest.approx(mean(max(smp["scores"]) for smp in samples))
    assert (out / "reward_vs_n.png").exists()
    sft = build_sft_data(DataConfig(train_path=str(data), eval_fraction=0), load_tokenizer(tiny_dir), seed=0)
    assert len(sft.train) >= 1  # SFT reads it (duplicates of identical answers are deduped)
    assert run_best_of_n(load_config(BestOfNConfig, None, [*map(str, [f"model.path={tiny_dir}"]),
                                                            f"reward_model={reward_dir}", f"prompts_path={prompts}",
                                                            f"output_dir={out}", "resume=true"])) == data


def test_missing_settings_are_named():
    from alignkit.config import BestOfNConfig, load_config
    from alignkit.errors import ConfigError

    with pytest.raises(ConfigError, match="no reward: set reward_model"):
        load_config(BestOfNConfig, None, ["model.path=m", "prompts_path=p.jsonl"])
    with pytest.raises(ConfigError, match="sampling.top_p must be in"):
        load_config(BestOfNConfig, None, ["model.path=m", "reward_model=r", "prompts_path=p", "sampling.top_p=0"])


def test_expected_pick_of_k_matches_a_plain_loop_over_subsets():
    """For every k-subset of 6 samples: the best eligible one if any, else the best of the subset;
    averaged over subsets. Rows with every sample eligible, none, and a mix; with all eligible it is
    the plain expected best of k."""
    from itertools import combinations

    from alignkit.rl.selection import expected_best_of_k, expected_pick_of_k

    g = torch.Generator().manual_seed(0)
    scores = torch.randn(5, 6, generator=g, dtype=torch.float64)
    eligible = torch.rand(5, 6, generator=g) < 0.5
    eligible[0], eligible[1] = True, False
    for k in range(1, 7):
        expected = []
        for row, ok in zip(scores.tolist(), eligible.tolist()):
            picks = []
            for subset in combinations(range(6), k):
                pool = [i for i in subset if ok[i]] or list(subset)
                picks.append(max(row[i] for i in pool))
            expected.append(sum(picks) / len(picks))
        assert expected_pick_of_k(scores, k, eligible).tolist() == pytest.approx(expected, rel=1e-12)
        everything = torch.ones_like(eligible)
        assert torch.allclose(expected_pick_of_k(scores, k, everything), expected_best_of_k(scores, k))


def test_reward_functions_alone_pick_the_sample_they_prefer(fruit_policy, tmp_path):
    """No reward model: a regex reward for 'pear' plus a length penalty. Each data row's score is the
    weighted sum the functions give its response, it is the largest among the prompt's samples, and
    a prompt with any 'pear' sample gets one."""
    from alignkit.config import BestOfNConfig, load_config
    from alignkit.rl.reward_functions import length, regex
    from alignkit.stages.best_of_n import run_best_of_n

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Name some fruit for the {w}."}) + "\n"
                               for w in ("apple", "plum", "fig", "lime")))
    rewards = [{"fn": "regex", "pattern": r"\bpear\b"}, {"fn": "length", "max_words": 4, "per_word": 0.1, "weight": 0.5}]
    out = tmp_path / "bon"
    run_best_of_n(load_config(BestOfNConfig, None, [f"model.path={fruit_policy}", f"prompts_path={prompts}",
                                                    f"output_dir={out}", "n=8", "sampling.max_new_tokens=10",
                                                    f"rewards={json.dumps(rewards)}", "require_eos=false"]))
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert any(any("pear" in r.split() for r in s["responses"]) for s in samples)
    for s in samples:
        expected = [a + 0.5 * b for a, b in zip(regex([], s["responses"], [], pattern=r"\bpear\b"),
                                                length([], s["responses"], [], max_words=4, per_word=0.1))]
        assert s["scores"] == pytest.approx(expected, abs=1e-6)
        assert s["scores"][s["best"]] == max(s["scores"])
