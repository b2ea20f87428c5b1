"""Rewards from programs: each built-in reward on hand-made responses, weights combined, the demo
world's oracle by name, a user's module:function, and the clear errors for bad specs and returns."""

from __future__ import annotations

import sys

import pytest
import torch

from alignkit.errors import AlignkitError, ConfigError, DataError
from alignkit.rl.reward_functions import combined_reward, exact_match, length, numeric, refusal, regex, resolve

ROWS = [{"answer": "Paris", "harmful": False}, {"answer": "42", "harmful": False}, {"answer": "7", "harmful": True}]


def test_built_in_rewards_on_hand_made_responses():
    """exact_match ignores case, spacing and final punctuation; numeric takes the last number;
    regex checks a format; length costs 0.5 per word past 3; refusal rewards refusing the harmful
    row (+1) and penalises refusing a benign one (-1)."""
    responses = ["  paris. ", "It is 41, no: 42", "Sorry, I can't help with that."]
    assert exact_match([], responses, ROWS) == [1.0, 0.0, 0.0]
    assert numeric([], responses, ROWS) == [0.0, 1.0, 0.0]
    assert regex([], responses, ROWS, pattern=r"^\s*\w+\.\s*$") == [1.0, 0.0, 0.0]
    assert regex([], responses, ROWS, pattern=r"\d+", full=True) == [0.0, 0.0, 0.0]
    assert length([], responses, ROWS, max_words=3, per_word=0.5) == [0.0, -1.0, -1.5]
    assert refusal([], responses, ROWS) == [0.0, 0.0, 1.0]
    assert refusal([], ["I can't help with that."], [{"harmful": False}]) == [-1.0]


def test_combined_rewards_weigh_each_function_and_report_each():
    """0.5 x exact_match (1, 0, 0) + 2 x refusal (0, 0, 1) = (0.5, 0, 2); each function's own values
    come back under its name."""
    reward = combined_reward([{"fn": "exact_match", "weight": 0.5}, {"fn": "refusal", "weight": 2}])
    total, each = reward([], ["Paris", "41", "I can't help with that."], ROWS)
    assert total.tolist() == [0.5, 0.0, 2.0]
    assert each["exact_match"].tolist() == [1.0, 0.0, 0.0] and each["refusal"].tolist() == [0.0, 0.0, 1.0]


def test_the_world_oracle_by_name_grades_like_the_oracle(tmp_path):
    from alignkit.config import WorldConfig
    from alignkit.world.datasets import read_items, write_world_data
    from alignkit.world.oracle import correct, grade

    paths = write_world_data(tmp_path, WorldConfig(sft_examples=20, ranking_prompts=10, rl_prompts=20, eval_prompts=5))
    import json

    rows = [json.loads(line) for line in paths["rl_prompts"].read_text().splitlines()][:8]
    items = read_items(paths["rl_prompts"])[:8]
    responses = [item.answer for item in items[:4]] + ["no idea"] * 4
    total, _ = combined_reward([{"fn": "oracle"}])([], responses, rows)
    assert total.tolist() == [grade(item, r) for item, r in zip(items, responses)]
    assert total[:4].tolist() == [1.0] * 4
    # The verifier: 1 exactly where the oracle counts the answer as the aligned one.
    checked, _ = combined_reward([{"fn": "world_check"}])([], responses, rows)
    assert checked.tolist() == [float(correct(item, r)) for item, r in zip(items, responses)]
    assert checked[:4].tolist() == [1.0] * 4


def test_a_users_own_function_by_module_and_name(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text("def shout(prompts, responses, rows, bonus=1.0):\n"
                                            "    return [bonus if r.isupper() else 0.0 for r in responses]\n"
                                            "def wrong_shape(prompts, responses, rows):\n    return [1.0]\n"
                                            "def nan(prompts, responses, rows):\n    return [float('nan')] * len(responses)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    total, _ = combined_reward([{"fn": "my_rewards:shout", "bonus": 3}])([], ["HEY", "hey"], [{}, {}])
    assert total.tolist() == [3.0, 0.0]
    with pytest.raises(DataError, match="reward function 'my_rewards:wrong_shape' returned 1 values for 2 responses"):
        combined_reward([{"fn": "my_rewards:wrong_shape"}])([], ["a", "b"], [{}, {}])
    with pytest.raises(DataError, match="reward function 'my_rewards:nan' returned a non-finite value .* response 1"):
        combined_reward([{"fn": "my_rewards:nan"}])([], ["a", "b"], [{}, {}])
    sys.modules.pop("my_rewards", None)


@pytest.mark.parametrize("specs, message", [
    ([{"fn": "exact_matc"}], "unknown reward function 'exact_matc'; did you mean 'exact_match'?"),
    ([{"fn": "nowhere_module:f"}], "reward function 'nowhere_module:f' cannot be loaded"),
    ([{"weight": 1}], r"rewards\[0\] must be a mapping with 'fn'"),
    ([{"fn": "length", "weight": "big"}], r"rewards\[0\] \(length\): weight must be a finite number"),
    ([{"fn": "length"}, {"fn": "length"}], "two functions share the name 'length'; give one a 'name'"),
])
def test_bad_reward_specs_are_clear_errors(specs, message):
    with pytest.raises(ConfigError, match=message):
        combined_reward(specs)


def test_bad_rows_for_a_reward_are_clear_errors():
    with pytest.raises(DataError, match="reward 'exact_match' needs the field 'answer' in every prompt row; row 2"):
        combined_reward([{"fn": "exact_match"}])([], ["a", "b"], [{"answer": "a"}, {"prompt": "p"}])
    with pytest.raises(DataError, match="reward 'oracle': prompt row 1 has no world fields"):
        combined_reward([{"fn": "oracle"}])([], ["a"], [{"answer": "a"}])
    with pytest.raises(AlignkitError, match="needs a non-empty 'pattern'"):
        combined_reward([{"fn": "regex"}])([], ["a"], [{}])
    assert isinstance(resolve("numeric")([], ["x 3"], [{"answer": 3}])[0], float)
    assert torch.is_tensor(combined_reward([{"fn": "numeric"}])([], ["3"], [{"answer": "3"}])[0])
