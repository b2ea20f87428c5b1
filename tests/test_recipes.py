"""The command line a user expects: recipes inside the package (configs ls / cp), validate, --version,
and `--help | head` without a traceback."""

import fnmatch
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from alignkit import recipes
from alignkit.cli import STAGE_CONFIGS, main

ROOT = Path(__file__).resolve().parents[1]


def alignkit(*args, **kw):
    return subprocess.run([sys.executable, "-m", "alignkit", *args], capture_output=True, text=True, cwd=ROOT, **kw)


def stage_of(name: str) -> str | None:
    parts = name.split("/")
    for p in (parts[0], parts[-1], parts[-1].split("-")[0]):
        if p in STAGE_CONFIGS:
            return p
        if p == "demo":
            return "pipeline"
    return None


def test_every_shipped_recipe_is_listed_and_loads_with_its_stage():
    from alignkit.config import load_config

    names = recipes.names()
    assert {"demo", "demo-rlvr", "sft/lora", "grpo/tiny", "dpo/simpo", "accelerate/1gpu", "deepspeed/zero3.json"} <= set(names)
    loaded = 0
    for name in names:
        stage = stage_of(name)
        if stage and not name.startswith(("accelerate/", "deepspeed/")):
            load_config(STAGE_CONFIGS[stage], str(recipes.find(name)))
            loaded += 1
    assert loaded >= 15
    assert recipes.config_path("sft/tiny") == str(recipes.ROOT / "sft" / "tiny.yaml")
    assert (ROOT / "configs").resolve() == recipes.ROOT  # the checkout's configs/ is the package's


def test_the_package_data_globs_ship_every_recipe():
    """What pip installs: pyproject's package-data patterns cover every file under configs/."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["alignkit"]
    files = [str(p.relative_to(recipes.ROOT.parent)) for p in recipes.ROOT.rglob("*") if p.is_file()]
    assert files and all(any(fnmatch.fnmatch(f, pat) and f.count("/") == pat.count("/") for pat in patterns)
                         for f in files)


def test_configs_cp_copies_a_recipe_with_its_base(tmp_path, capsys):
    from alignkit.config import PipelineConfig, load_config, to_yaml

    assert main(["configs", "cp", "demo-full", f"{tmp_path}/mine/"]) == 0
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["demo-full.yaml", "demo.yaml"]
    copied = load_config(PipelineConfig, str(tmp_path / "mine" / "demo-full.yaml"))
    assert to_yaml(copied) == to_yaml(load_config(PipelineConfig, str(recipes.find("demo-full"))))
    assert main(["configs", "cp", "demo-full", f"{tmp_path}/mine/"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["configs", "cp", "sft/lroa", str(tmp_path / "x.yaml")]) == 2
    assert "did you mean sft/lora" in capsys.readouterr().err


def test_validate_prints_the_config_and_names_missing_paths(tiny_dir, train_file, tmp_path):
    ok = alignkit("validate", "sft/lora", f"model.path={tiny_dir}", f"data.train_path={train_file}")
    assert ok.returncode == 0 and "lora_r: 8" in ok.stdout and "sft config" in ok.stderr and "ok" in ok.stderr
    bad = alignkit("validate", "sft", "configs/sft/lora.yaml", f"model.path={tmp_path / 'nope'}",
                   f"data.train_path={train_file}", "data.eval_path=hf://org/set")
    assert bad.returncode == 2 and f"error: model.path={tmp_path / 'nope'} does not exist" in bad.stderr
    assert "eval_path" not in bad.stderr  # a hub data set is not checked here
    scorer = alignkit("validate", "sft/lora", f"model.path={tiny_dir}", f"data.train_path={train_file}",
                      f"data.filter_model={tmp_path / 'no-rm'}")
    assert scorer.returncode == 2 and f"error: data.filter_model={tmp_path / 'no-rm'} does not exist" in scorer.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["train.jsonl"]  # nothing trained, nothing written
    unknown = alignkit("validate", str(train_file))
    assert unknown.returncode == 2 and "cannot tell which stage" in unknown.stderr


@pytest.mark.parametrize("args", [["--help"], ["sft", "--help"], ["configs", "ls"]])
def test_output_cut_short_by_head_is_not_an_error(args):
    """`alignkit --help | head -1`: the reader goes away early; alignkit exits 0, no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "alignkit", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=ROOT)
    proc.stdout.readline()
    proc.stdout.close()  # as head does after its lines
    err = proc.stderr.read().decode()
    assert proc.wait() == 0 and "Traceback" not in err and "BrokenPipe" not in err


def test_version():
    out = alignkit("--version")
    assert out.returncode == 0 and out.stdout.startswith("alignkit 0.")
