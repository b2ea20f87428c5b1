"""Experiment trackers through accelerate (`log.report_to`), with the real libraries offline: wandb
in offline mode and mlflow's local file store receive every metric row metrics.jsonl has, and the
run's config."""

import json
import struct
from pathlib import Path

import pytest

from alignkit.errors import ConfigError


def wandb_records(path: Path):
    """The protobuf records of a .wandb file (LevelDB's log format: 32 KiB blocks of records with a
    7-byte header (crc, length, type: 1 full, 2 first, 3 middle, 4 last) after a 7-byte file header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, head = path.read_bytes(), 32768, 7
    assert data[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + head <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos:pos + head]) if left >= head else (0, 0, 0)
        if left < head or (length == 0 and kind == 0):
            pos += left
            continue
        body, pos = data[pos + head:pos + head + length], pos + head + length
        pending = body if kind in (1, 2) else pending + body
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def test_wandb_offline_and_mlflow_file_store_get_the_jsonl_rows(tiny_dir, train_file, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    from alignkit.config import SFTConfig, load_config
    from alignkit.stages.sft import run_sft

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow 3 keeps the file store in maintenance
    out = tmp_path / "sft-run"
    run_sft(load_config(SFTConfig, None, [f"model.path={tiny_dir}", f"data.train_path={train_file}", f"output_dir={out}",
                                          "train.max_steps=4", "log.every=2", "train.eval_every=2", "log.progress=false",
                                          "data.packing=off", "log.report_to=[wandb, mlflow]", "log.project=tests"]))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    expected = {(r["step"], k): v for r in rows for k, v in r.items()
                if k not in ("step", "time") and isinstance(v, (int, float))}
    assert {k for _, k in expected} >= {"loss", "lr", "eval_loss"}

    (run_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    got, config = {}, {}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            got.update({(items["_step"], k): v for k, v in items.items() if not k.startswith("_")})
        elif kind in ("run", "config"):
            update = record.run.config.update if kind == "run" else record.config.update
            config.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in update})
            if kind == "run":
                assert record.run.project == "tests" and record.run.display_name == "sft-run"
    assert got == pytest.approx(expected)
    config = {k: v["value"] if isinstance(v, dict) and "value" in v else v for k, v in config.items()}
    assert config["optim.lr"] == pytest.approx(2e-5) and config["train.max_steps"] == 4

    (run_dir,) = [p.parent for p in (tmp_path / "mlruns").glob("*/*/meta.yaml") if (p.parent / "metrics").is_dir()]
    from_mlflow = {}
    for metric in (run_dir / "metrics").iterdir():
        for line in metric.read_text().splitlines():
            _, value, step = line.split()
            from_mlflow[(int(step), metric.name)] = float(value)
    assert from_mlflow == pytest.approx(expected)
    assert (run_dir / "params" / "train.max_steps").read_text() == "4"


def test_an_unknown_tracker_suggests_the_closest(tiny_dir, train_file):
    from alignkit.config import SFTConfig, load_config

    with pytest.raises(ConfigError, match="unknown tracker 'wandbb'; did you mean 'wandb'"):
        load_config(SFTConfig, None, [f"model.path={tiny_dir}", f"data.train_path={train_file}",
                                      "log.report_to=[wandbb]"])
