"""Hub ids where a model path goes, served offline from a hub cache laid out as huggingface_hub
lays it out (HF_HOME/hub/models--org--name/{refs,snapshots}); nothing reaches the network."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_jsonl

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TAGGED = "fedcba9876543210fedcba9876543210fedcba98"


def lay_out_cache(home: Path, repo: str, source: Path, kind: str = "models") -> None:
    """`repo` at `main` (COMMIT) and at tag `v1` (TAGGED), both snapshots copies of `source`."""
    root = home / "hub" / f"{kind}--{repo.replace('/', '--')}"
    for ref, commit in (("main", COMMIT), ("v1", TAGGED)):
        shutil.copytree(source, root / "snapshots" / commit)
        (root / "refs").mkdir(parents=True, exist_ok=True)
        (root / "refs" / ref).write_text(commit)


def chat_rows(n: int, tag: str) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"{tag} question {i}"},
                          {"role": "assistant", "content": f"{tag} answer {i}"}]} for i in range(n)]


@pytest.fixture
def hub_home(tmp_path, tiny_dir, monkeypatch) -> Path:
    import huggingface_hub.constants as constants

    home = tmp_path / "hf-home"
    lay_out_cache(home, "tiny-org/llama", tiny_dir)
    data = tmp_path / "chats" / "data"
    data.mkdir(parents=True)
    write_jsonl(data / "train.jsonl", chat_rows(12, "train"))
    write_jsonl(data / "test.jsonl", chat_rows(3, "test"))
    lay_out_cache(home, "tiny-org/chats", data.parent, kind="datasets")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(home / "datasets"))
    # huggingface_hub reads HF_HOME when imported; this process's copy is pointed at the new cache.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return home


def test_a_hub_id_and_a_revision_resolve_from_the_cache(hub_home, tiny_dir):
    from alignkit.models import load_causal_lm, load_tokenizer
    from alignkit.models.loading import is_hub_id, local_dir

    assert local_dir("tiny-org/llama").name == COMMIT
    assert local_dir("tiny-org/llama@v1").name == TAGGED
    assert local_dir(f"tiny-org/llama@{COMMIT}").name == COMMIT
    model, tok = load_causal_lm("tiny-org/llama"), load_tokenizer("tiny-org/llama@v1")
    assert model.config.vocab_size == len(tok)
    assert is_hub_id("tiny-org/llama") and not is_hub_id(str(tiny_dir)) and not is_hub_id("../x/y")


def test_an_id_missing_offline_names_it_and_the_ways_out(hub_home):
    from alignkit.errors import ModelError
    from alignkit.models import load_causal_lm

    with pytest.raises(ModelError) as err:
        load_causal_lm("tiny-org/absent@v2")
    text = str(err.value)
    assert "tiny-org/absent@v2" in text and "local path" in text and "connected machine" in text
    with pytest.raises(ModelError, match="does not exist"):
        load_causal_lm("no_such_dir_here")


def test_a_hub_data_set_reads_by_split_from_the_cache(hub_home):
    from alignkit.data.records import read_records
    from alignkit.errors import DataError

    train = read_records("hf://tiny-org/chats")
    assert [r.row["messages"][0]["content"] for r in train][:2] == ["train question 0", "train question 1"]
    assert len(train) == 12 and train[3].where == "hf://tiny-org/chats (train), row 3"
    assert len(read_records("hf://tiny-org/chats@v1?split=test")) == 3
    with pytest.raises(DataError, match="unknown option 'splits'"):
        read_records("hf://tiny-org/chats?splits=test")
    with pytest.raises(DataError, match="cannot read split 'dev'"):
        read_records("hf://tiny-org/chats?split=dev")
    with pytest.raises(DataError, match="not in the local hub cache.*connected machine"):
        read_records("hf://tiny-org/absent")


def test_importing_alignkit_leaves_hf_hub_offline_alone():
    """Never set by the product: the user's connected machine downloads; their setting is respected."""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    code = "import os, alignkit.models.loading, alignkit.cli; print(os.environ.get('HF_HUB_OFFLINE'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "None"


def test_sft_trains_a_hub_model_and_a_lora_adapter_keeps_its_hub_base(hub_home, tiny_dir, tmp_path):
    """`alignkit sft model.path=tiny-org/llama data.train_path=hf://tiny-org/chats` in a process with
    HF_HOME at the laid-out cache and HF_HUB_OFFLINE=1: it trains on the hub's rows; the LoRA adapter
    records the id as its base, and loads through it."""
    env = {**os.environ, "HF_HOME": str(hub_home), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "alignkit", "sft", "model.path=tiny-org/llama",
                    "data.train_path=hf://tiny-org/chats", "data.eval_path=hf://tiny-org/chats?split=test",
                    f"output_dir={out}", "train.max_steps=2", "log.progress=false", "peft.method=lora"],
                   env=env, check=True, capture_output=True, cwd=ROOT)
    report = json.loads((out / "data_report.json").read_text())
    assert report["train"]["rows_read"] == 12 and report["eval"]["rows_read"] == 3
    adapter = json.loads((out / "model" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "tiny-org/llama"
    import torch

    from alignkit.models import load_causal_lm

    tuned, base = load_causal_lm(out / "model"), load_causal_lm(tiny_dir)
    weight = "model.embed_tokens.weight"
    assert torch.equal(tuned.get_base_model().state_dict()[weight], base.state_dict()[weight])  # the hub's base
    assert any("lora_" in k for k in tuned.state_dict())
