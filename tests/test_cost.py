"""The cost model (`alignkit rm objective=cost`, Safe RLHF eq. 6): the loss against hand-derived values,
its rows, the stage on a tiny model, and the cost model as the safety filter's classifier."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from alignkit.config import RMConfig, load_config
from alignkit.data.cost import to_cost_row
from alignkit.data.records import Record
from alignkit.errors import ConfigError, DataError
from alignkit.losses.cost import cost_accuracy, cost_example_losses, cost_ranking_loss, cost_sign_loss
from alignkit.world.safety import BENIGN, HARMFUL, REFUSAL, TEMPLATES, placeholder_compliance


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# --- the loss ----------------------------------------------------------------------------------------

def test_cost_loss_against_hand_values():
    """Costs 2.0 (unsafe), -1.0 (safe) in example 0, which ranks them (the first more harmful), and
    0.5 (unsafe) alone in example 1.
      sign terms: -log s(2) = log(1 + e^-2) = 0.126928; safe, s = -1: -log s(1) = log(1 + e^-1) = 0.313262;
                  -log s(0.5) = log(1 + e^-0.5) = 0.474077
      ranking term of example 0: -log s(2 - (-1)) = log(1 + e^-3) = 0.048587
      example 0: (0.126928 + 0.313262) / 2 + 0.048587 = 0.268682; example 1: 0.474077."""
    costs = torch.tensor([2.0, -1.0, 0.5])
    unsafe = torch.tensor([True, False, True])
    per = cost_example_losses(costs, unsafe, torch.tensor([0, 0, 1]), torch.tensor([0]), torch.tensor([1]), 2)
    assert per.tolist() == pytest.approx([0.268682, 0.474077], abs=1e-6)
    assert cost_sign_loss(costs, unsafe).tolist() == pytest.approx([softplus(-2), softplus(-1), softplus(-0.5)])
    assert cost_ranking_loss(torch.tensor([2.0]), torch.tensor([-1.0])).item() == pytest.approx(softplus(-3))
    assert cost_accuracy(torch.tensor([2.0, -1.0, -0.5, 0.0]), torch.tensor([True, False, True, False])).tolist() == \
        [1.0, 1.0, 0.0, 1.0]  # 0 is safe


def test_cost_loss_without_pairs_is_the_mean_sign_term():
    costs = torch.tensor([1.0, 3.0])
    per = cost_example_losses(costs, torch.tensor([False, True]), torch.tensor([0, 0]), torch.tensor([], dtype=torch.long),
                              torch.tensor([], dtype=torch.long), 1)
    assert per.item() == pytest.approx((softplus(1.0) + softplus(-3.0)) / 2)


def test_cost_loss_gradient_pushes_labels_across_zero():
    costs = torch.tensor([0.0, 0.0], requires_grad=True)
    cost_example_losses(costs, torch.tensor([True, False]), torch.tensor([0, 1]), torch.tensor([], dtype=torch.long),
                        torch.tensor([], dtype=torch.long), 2).sum().backward()
    assert costs.grad.tolist() == pytest.approx([-0.5, 0.5])  # d/dc softplus(-c) at 0 = -1/2: the unsafe one rises


# --- rows --------------------------------------------------------------------------------------------

def test_cost_rows_of_each_shape():
    pku = to_cost_row(Record({"prompt": "q", "response_0": "a", "response_1": "b", "is_response_0_safe": True,
                              "is_response_1_safe": False, "safer_response_id": 0, "category": "weapons"}, "f:1"))
    assert (pku.responses, pku.unsafe, pku.more_harmful, pku.category) == (("a", "b"), (False, True), 1, "weapons")
    labelled = to_cost_row(Record({"prompt": "q", "response": "a", "safe": False}, "f:2"))
    assert (labelled.unsafe, labelled.more_harmful) == ((True,), None)
    request = to_cost_row(Record({"text": "how do i build a bomb", "harmful": True}, "f:3"))
    assert request.prompt == ({"role": "user", "content": "how do i build a bomb"},) and request.responses == ("",)
    assert to_cost_row(Record({"text": "hi", "unsafe": False}, "f:4")).unsafe == (False,)


@pytest.mark.parametrize("row, message", [
    ({"prompt": "q", "response": "a"}, "f:9: a labelled row needs exactly one of the fields safe, unsafe, harmful"),
    ({"prompt": "q", "response": "a", "safe": True, "harmful": False}, "got safe, harmful"),
    ({"prompt": "q", "response": "a", "safe": "yes"}, "field 'safe' must be true or false, got 'yes'"),
    ({"prompt": "q", "response_0": "a", "response_1": "b", "is_response_0_safe": True, "is_response_1_safe": True,
      "safer_response_id": 2}, "safer_response_id must be 0 or 1, got 2"),
    ({"prompt": "q", "response_0": "a"}, "a PKU-SafeRLHF row needs response_1, is_response_0_safe"),
    ({"chosen": "a"}, "a cost-model row needs 'prompt' and 'response'"),
])
def test_bad_cost_rows_name_the_line_and_field(row, message):
    with pytest.raises(DataError, match="^f:9: ") as exc:
        to_cost_row(Record(row, "f:9"))
    assert message in str(exc.value)


def test_cost_objective_rejects_reward_only_options(tmp_path):
    with pytest.raises(ConfigError, match="objective=cost trains on labelled responses"):
        load_config(RMConfig, None, ["model.path=m", "data.train_path=d", "objective=cost", "batch_by=ranking"])
    with pytest.raises(ConfigError, match="keep_best must be eval_accuracy, eval_accuracy/GROUP, eval_pair_accuracy"):
        load_config(RMConfig, None, ["model.path=m", "data.train_path=d", "objective=cost", "keep_best=eval_margin",
                                     "train.eval_every=5"])


# --- the stage and the filter -------------------------------------------------------------------------

def world_cost_rows() -> list[dict]:
    """The demo world's safety family as cost data: each harmful request in every template as a
    PKU-style row (placeholder compliance unsafe, refusal safe and safer) and as a labelled request;
    each look-alike with its help text (safe) and as a labelled request."""
    rows = []
    for cat, xs in HARMFUL.items():
        for x in xs:
            for t in TEMPLATES:
                rows.append({"prompt": t.format(x=x), "response_0": placeholder_compliance(x), "response_1": REFUSAL,
                             "is_response_0_safe": False, "is_response_1_safe": True, "safer_response_id": 1,
                             "category": cat})
                rows.append({"text": t.format(x=x), "harmful": True, "category": cat, "source": "requests"})
    for x, answer in BENIGN.items():
        for t in TEMPLATES:
            rows.append({"prompt": t.format(x=x), "response": answer, "safe": True, "category": "benign"})
            rows.append({"text": t.format(x=x), "harmful": False, "category": "benign", "source": "requests"})
    return rows


@pytest.fixture(scope="module")
def cost_dir(tiny_dir, tmp_path_factory) -> tuple[Path, Path]:
    from alignkit.stages.rm import run_rm

    root = tmp_path_factory.mktemp("cost")
    data = root / "cost.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in world_cost_rows()))
    cfg = load_config(RMConfig, None, [f"model.path={tiny_dir}", f"data.train_path={data}", f"output_dir={root / 'run'}",
                                       "objective=cost", "data.max_length=96", "data.eval_fraction=0.2",
                                       "log.progress=false", "log.every=10", "train.batch_size=16", "optim.lr=2e-3",
                                       "train.max_steps=60", "train.eval_every=30"])
    return run_rm(cfg), root / "run"


def test_cost_model_learns_harm_by_category(cost_dir):
    """Held-out prompts (20% of the world's safety requests, whole prompts): the verdict cost > 0 is
    right for at least 90% of labelled responses and requests, the compliance costs more than the
    refusal in at least 90% of pairs, and accuracy is reported per category and per source."""
    model_dir, run = cost_dir
    last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["eval_accuracy"] >= 0.9 and last["eval_pair_accuracy"] >= 0.9
    assert {"eval_unsafe_recall", "eval_safe_recall", "eval_accuracy/category:benign", "eval_accuracy/requests"} <= set(last)
    saved = json.loads((model_dir / "reward_normalization.json").read_text())
    assert saved["objective"] == "cost" and saved["offset"] == 0.0


def test_cost_model_as_the_filter_classifier(cost_dir, tmp_path):
    """A rules file with one rule that never fires and the cost model as its classifier: the classifier
    alone blocks most harmful world requests and passes most look-alikes; `combine` decides."""
    from alignkit.safety import load_filter

    model_dir, _ = cost_dir
    (tmp_path / "rules.yaml").write_text(f"categories:\n  none:\n    patterns: ['\\bzzzz\\b']\n"
                                         f"classifier:\n  path: {model_dir}\n  combine: either\n")
    f = load_filter(tmp_path / "rules.yaml")
    harmful = [t.format(x=x) for xs in HARMFUL.values() for x in xs for t in TEMPLATES[-2:]]
    benign = [t.format(x=x) for x in BENIGN for t in TEMPLATES[-2:]]
    verdicts = f.check_inputs(harmful + benign)
    blocked_harmful = sum(v.blocked for v in verdicts[:len(harmful)])
    blocked_benign = sum(v.blocked for v in verdicts[len(harmful):])
    # measured 45 of 50 and 4 of 30 (a 2-layer model from scratch, 60 steps): the plumbing is what is tested
    assert blocked_harmful >= 0.8 * len(harmful) and blocked_benign <= 0.2 * len(benign)
    flagged = next(v for v in verdicts if v.blocked)
    assert flagged.category == "classifier" and flagged.score > 0 and "the classifier scores" in flagged.reason
    assert f.check_input(harmful[0]).score == pytest.approx(verdicts[0].score, abs=1e-5)  # one or many: same score
    # rules only: the classifier's score is reported, nothing is blocked by it
    rules_only = load_filter(tmp_path / "rules.yaml", classifier=str(model_dir), combine="rules")
    assert not any(v.blocked for v in rules_only.check_inputs(harmful[:4]))
    # the default rules and the classifier together, from Python
    both = load_filter(None, classifier=str(model_dir), combine="both")
    assert both.check_input("How do I build a bomb?").blocked
    assert not both.check_input("How do I build a bomb shelter?").blocked


def test_a_missing_classifier_fails_when_the_filter_is_built(tmp_path):
    from alignkit.safety import load_filter

    (tmp_path / "rules.yaml").write_text("categories:\n  a:\n    patterns: ['x']\nclassifier:\n  path: runs/nowhere/model\n")
    with pytest.raises(ConfigError, match=r"rules.yaml, line 5: classifier 'runs/nowhere/model' is not a model directory"):
        load_filter(tmp_path / "rules.yaml")
    with pytest.raises(ConfigError, match=r"load_filter: classifier '/no/such/dir' is not a model directory"):
        load_filter(None, classifier="/no/such/dir")


def test_cost_rows_of_keeps_the_lines_as_written_and_names_a_bad_line(tmp_path):
    """Rows of the kept categories come out byte for byte in their order; a line that is not JSON, or
    not an object, is a DataError naming the file and line (not a JSONDecodeError traceback)."""
    from alignkit.world.datasets import cost_rows_of

    lines = ['{"category": "harm", "safe": false}', '{"category": "false_premise"}', '{"category":  "skills"}']
    src = tmp_path / "cost.jsonl"
    src.write_text("\n".join(lines[:2]) + "\n\n" + lines[2] + "\n")
    out = cost_rows_of(src, ("harm", "skills"), tmp_path / "kept.jsonl")
    assert out.read_text() == lines[0] + "\n" + lines[2] + "\n"
    for bad, message in (('{"category": "harm",', r"cost.jsonl:2: not valid JSON"),
                         ('["harm"]', r"cost.jsonl:2: expected a JSON object, got list")):
        src.write_text(lines[0] + "\n" + bad + "\n")
        with pytest.raises(DataError, match=message):
            cost_rows_of(src, ("harm",), tmp_path / "kept.jsonl")
