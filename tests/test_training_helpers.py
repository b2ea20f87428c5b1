"""LR schedule, data order across steps and processes, checkpoint round trip and atomicity."""

from __future__ import annotations

import math

import pytest
import torch

from alignkit.training.batching import global_batch, micro_batches, shard
from alignkit.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from alignkit.training.optim import lr_factor


def test_lr_schedule_values():
    """total 10, warmup 2: steps 0,1 ramp to 1/2, 2/2; then progress p = (s - 2) / 8.
    linear at s=6: 1 - p = 0.5; cosine at s=6: (1 + cos(pi/2)) / 2 = 0.5; at s=4: (1 + cos(pi/4)) / 2."""
    assert lr_factor(0, 10, 2, "cosine") == 0.5
    assert lr_factor(1, 10, 2, "cosine") == 1.0
    assert lr_factor(2, 10, 2, "cosine") == 1.0
    assert lr_factor(6, 10, 2, "linear") == 0.5
    assert lr_factor(6, 10, 2, "cosine") == pytest.approx(0.5)
    assert lr_factor(4, 10, 2, "cosine") == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    assert lr_factor(10, 10, 2, "linear", min_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(7, 10, 0, "constant") == 1.0


def test_every_sample_once_per_epoch_across_processes():
    """12 rows, batch 2 x accumulation 1 x 3 processes = global 6: two steps are one epoch, and the
    union of every process's micro-batches is each row exactly once."""
    seen = []
    for step in range(2):
        idx = global_batch(12, step, 6, seed=3)
        for rank in range(3):
            for mb in micro_batches(idx, 2, 1, rank, 3):
                seen += mb
    assert sorted(seen) == list(range(12))


def test_batches_span_epochs_without_dropping():
    """10 rows in global batches of 4: steps 0-4 cover 20 positions = each row twice."""
    seen = [i for s in range(5) for i in global_batch(10, s, 4, seed=0)]
    assert sorted(seen) == sorted(list(range(10)) * 2)
    assert global_batch(10, 3, 4, seed=0) == global_batch(10, 3, 4, seed=0)
    assert global_batch(10, 0, 4, seed=0) != global_batch(10, 0, 4, seed=1)


def test_accumulation_splits_the_same_global_batch():
    idx = global_batch(100, 7, 8, seed=0)
    assert [i for mb in micro_batches(idx, 2, 4, 0, 1) for i in mb] == idx
    assert micro_batches(idx, 8, 1, 0, 1) == [idx]
    assert shard(list(range(5)), 1, 2) == [1, 3]


def _model_and_opt():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    model[0].weight.requires_grad_(False)  # frozen: not in the checkpoint
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    return model, opt, sched


def _train(model, opt, sched, steps):
    for _ in range(steps):
        loss = model(torch.randn(5, 3)).pow(2).mean()
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()


def test_checkpoint_round_trip_continues_identically(tmp_path):
    model, opt, sched = _model_and_opt()
    _train(model, opt, sched, 2)
    path = save_checkpoint(tmp_path, 2, model, opt, sched, extra={"note": 1})
    assert sorted(p.name for p in path.iterdir()) == ["model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json"]
    _train(model, opt, sched, 3)
    expected = [p.detach().clone() for p in model.parameters()]

    model2, opt2, sched2 = _model_and_opt()
    state = load_checkpoint(path, model2, opt2, sched2)
    assert state["step"] == 2 and state["extra"] == {"note": 1}
    _train(model2, opt2, sched2, 3)  # RNG restored too, so the same random inputs follow
    for a, b in zip(expected, model2.parameters()):
        assert torch.equal(a, b)


def test_incomplete_checkpoint_is_ignored_and_old_ones_rotate(tmp_path):
    model, opt, sched = _model_and_opt()
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model, opt, sched, keep_last=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-000002", "step-000003"]
    # A crash mid-save leaves a temporary directory or a directory without state.json: neither counts.
    (tmp_path / "checkpoints" / ".step-000004.tmp-1").mkdir()
    (tmp_path / "checkpoints" / "step-000005").mkdir()
    assert latest_checkpoint(tmp_path).name == "step-000003"
