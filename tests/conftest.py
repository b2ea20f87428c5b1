"""Shared fixtures: tiny models built in code (nothing downloaded) and small data files."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One torch thread per process, inherited by the multi-process tests' children: two processes of two
# threads each on CI's two cores spent the suite's time in oversubscription (measured: 670 s with one
# thread against 852-1126 s with two). Set before anything imports torch; OMP_NUM_THREADS=N overrides.
os.environ.setdefault("OMP_NUM_THREADS", "1")

WORDS = ("apple pear plum grape melon lemon mango peach cherry berry kiwi lime fig date olive "
         "bean corn rice wheat oat").split()


REVERSE = ("Reverse the word {w}.", "Please reverse {w}.", "Write {w} backwards.")
UPPER = ("Upper-case the word {w}.", "Write {w} in capitals.", "Make {w} upper case.")


def task_rows() -> list[dict]:
    """Alpaca rows of two small tasks (reverse, upper-case) over a fixed word list, three phrasings
    each: 120 distinct rows. A held-out row's word and task appear in training under another
    phrasing, so a tiny model can lower held-out loss by learning the tasks per word."""
    rows = []
    for i in range(3):
        for w in WORDS:
            rows.append({"instruction": REVERSE[i].format(w=w), "input": "", "output": w[::-1]})
            rows.append({"instruction": UPPER[i].format(w=w), "input": "", "output": w.upper()})
    return rows


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((json.dumps(r) if not isinstance(r, str) else r) + "\n" for r in rows))
    return path


def perturbed_copy(model_dir: Path, out: Path, scale: float, seed: int) -> Path:
    """A copy of a saved model with every weight moved by scale x its tensor's std x N(0, 1): a
    second model that differs from the first (a teacher, a rival) without training one."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(model_dir, out)
    state = load_file(str(out / "model.safetensors"))
    gen = torch.Generator().manual_seed(seed)
    save_file({k: v + scale * v.std() * torch.randn(v.shape, generator=gen) for k, v in state.items()},
              str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def corpus() -> list[str]:
    return [f"{r['instruction']} {r['output']}" for r in task_rows()] * 4


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    """Tiny llama, qwen2, gemma and gpt2 models (tokenizer trained on the task corpus), saved once per session."""
    from alignkit.models import build_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    dirs = {}
    for arch in ("llama", "qwen2", "gemma", "gpt2"):
        build_tiny_model(root / arch, corpus(), arch=arch, hidden=64, layers=2, heads=4)
        dirs[arch] = root / arch
    return dirs


@pytest.fixture(scope="session")
def tiny_dir(tiny_dirs) -> Path:
    return tiny_dirs["llama"]


@pytest.fixture(scope="session")
def tokenizer(tiny_dir):
    from alignkit.models import load_tokenizer

    return load_tokenizer(tiny_dir)


@pytest.fixture
def train_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "train.jsonl", task_rows())


@pytest.fixture(scope="session")
def reward_dir(tiny_dir, tmp_path_factory) -> Path:
    """A reward model as `alignkit rm` saves one: the tiny Llama with a fresh score head, and an offset."""
    from alignkit.models import load_tokenizer
    from alignkit.models.reward import load_reward_backbone

    out = tmp_path_factory.mktemp("rm") / "model"
    import torch

    torch.manual_seed(0)
    load_reward_backbone(tiny_dir).save_pretrained(out)
    load_tokenizer(tiny_dir).save_pretrained(out)
    (out / "reward_normalization.json").write_text(json.dumps({"offset": 0.25}))
    return out


@pytest.fixture(scope="session")
def prompts_file(tmp_path_factory) -> Path:
    rows = [{"prompt": f"Say something about the {w}."} for w in WORDS] + \
        [{"messages": [{"role": "user", "content": f"Name a fruit like {w}."}]} for w in WORDS]
    return write_jsonl(tmp_path_factory.mktemp("ppo") / "prompts.jsonl", rows)


@pytest.fixture(scope="session")
def fruit_policy(tiny_dir, tmp_path_factory) -> Path:
    """The tiny Llama after a short SFT on six random fruit words per answer: it says 'pear' about
    one word in twenty, so a reward for it has something to start from."""
    from alignkit.config import SFTConfig, load_config
    from alignkit.stages.sft import run_sft

    rng = random.Random(0)
    root = tmp_path_factory.mktemp("fruit")
    rows = [{"instruction": f"Name some fruit for the {w}.", "output": " ".join(rng.choice(WORDS) for _ in range(6))}
            for w in WORDS for _ in range(10)]
    data = write_jsonl(root / "sft.jsonl", rows)
    return run_sft(load_config(SFTConfig, None, [f"model.path={tiny_dir}", f"data.train_path={data}",
                                                 f"output_dir={root / 'sft'}", "train.max_steps=40", "optim.lr=1e-2",
                                                 "train.batch_size=16", "log.progress=false", "data.eval_fraction=0"]))
