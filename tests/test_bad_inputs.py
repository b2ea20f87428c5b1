"""The bad-input catalogue: inputs a careless or hostile user gives, each of which must end in a clear
error (an AlignkitError naming the file, line or key) and never in a traceback, a hang, memory
exhaustion or a lost file. Each case was found by trying it; the message fragment is what it must say.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import pytest
import torch

from alignkit import config as C
from alignkit.errors import AlignkitError

REQUIRED = ["model.path=m", "data.train_path=d.jsonl"]
# Nine levels of nine aliases: under 1 KB, ~387 million leaves when expanded.
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8))


def sft_file(text: str) -> Callable[[Path], object]:
    def run(tmp: Path) -> object:
        path = tmp / "sft.yaml"
        path.write_text(text)
        return C.load_config(C.SFTConfig, path)
    return run


def rules_file(text: str) -> Callable[[Path], object]:
    def run(tmp: Path) -> object:
        from alignkit.safety.rules import load_rules

        path = tmp / "rules.yaml"
        path.write_text(text)
        return load_rules(path)
    return run


def sft_overrides(*overrides: str) -> Callable[[Path], object]:
    return lambda tmp: C.load_config(C.SFTConfig, None, [*REQUIRED, *overrides])


def sft_run(*overrides: str, setup: Callable[[Path], None] | None = None) -> Callable[[Path], object]:
    """run_sft on a tiny setup; {tmp} in an override is the test's directory. The refusals here all
    come before any model or data is loaded."""
    def run(tmp: Path) -> object:
        from alignkit.stages.sft import run_sft

        if setup is not None:
            setup(tmp)
        args = [o.replace("{tmp}", str(tmp)) for o in overrides]
        return run_sft(C.load_config(C.SFTConfig, None, [*REQUIRED, *args]))
    return run


def write(rel: str, text: str = "x") -> Callable[[Path], None]:
    def make(tmp: Path) -> None:
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(text)
    return make


def base_file(target: str, setup: Callable[[Path], None] | None = None) -> Callable[[Path], object]:
    def run(tmp: Path) -> object:
        if setup is not None:
            setup(tmp)
        path = tmp / "child.yaml"
        path.write_text(f"base: {target.replace('{tmp}', str(tmp))}\n")
        return C.load_config(C.SFTConfig, path, REQUIRED)
    return run


def base_chain(depth: int) -> Callable[[Path], object]:
    def run(tmp: Path) -> object:
        for i in range(depth):
            (tmp / f"c{i}.yaml").write_text(f"base: c{i + 1}.yaml\n")
        (tmp / f"c{depth}.yaml").write_text("optim:\n  lr: 1.0e-4\n")
        return C.load_config(C.SFTConfig, tmp / "c0.yaml", REQUIRED)
    return run


def ranking(row: dict) -> Callable[[Path], object]:
    def run(tmp: Path) -> object:
        from alignkit.data.preferences import to_ranking
        from alignkit.data.records import Record

        return to_ranking(Record(row, "prefs.jsonl, line 3"))
    return run


def cli(*argv: str) -> Callable[[Path], object]:
    """The command as a user types it; its clear errors become AlignkitError here as in main()."""
    def run(tmp: Path) -> object:
        from alignkit.cli import COMMANDS

        return COMMANDS[argv[0]][0](list(argv[1:]))
    return run


CASES = {
    "yaml alias bomb in a stage config": (sft_file(ALIAS_BOMB), "sft.yaml, line 2: not valid YAML (an alias (*a) is not accepted"),
    "yaml alias bomb in a rules file": (rules_file(ALIAS_BOMB), "rules.yaml, line 2: not valid YAML (an alias (*a)"),
    "optim.lr=nan": (sft_overrides("optim.lr=nan"), "optim.lr must be > 0, got nan"),
    "train.epochs=nan": (sft_overrides("train.max_steps=0", "train.epochs=.nan"), "train.epochs must be >= 0, got nan"),
    "world annotate with a label noise that is not a number": (cli("world", "annotate", "x", "y", "abc"),
                                                               "label_noise must be a number in [0, 1], got 'abc'"),
    "world annotate with files that do not exist": (cli("world", "annotate", "x.csv", "y.json"), "x.csv does not exist"),
    "a rule the linear-time engine cannot take": (rules_file("categories:\n  a:\n    patterns: ['(?=x)ab']\n"),
                                                  "needs a construct the linear-time regex engine (RE2) does not have"),
    "empty output_dir": (sft_run("output_dir="), "output_dir is empty"),
    "output_dir that is a file": (sft_run("output_dir={tmp}/f", setup=write("f")), "is a file, not a directory"),
    "output_dir equal to the input model": (sft_run("output_dir={tmp}/m", "model.path={tmp}/m", setup=write("m/config.json")),
                                            "model.path="),
    "input model inside output_dir/model": (sft_run("output_dir={tmp}/run", "model.path={tmp}/run/model",
                                                    setup=write("run/model/config.json")), "is inside output_dir"),
    "a user's own files in output_dir/model": (sft_run("output_dir={tmp}/run", setup=write("run/model/notes.txt")),
                                               "model already exists, and the run would replace it"),
    "resume with another learning rate": (sft_run("output_dir={tmp}/run", "resume=true", "optim.lr=0.5",
                                                  setup=lambda tmp: [write("run/metrics.jsonl", "")(tmp),
                                                                     write("run/config.yaml", "optim:\n  lr: 0.0001\n")(tmp)]),
                                          "optim.lr (0.0001 -> 0.5)"),
    "base: a file that is not YAML": (base_file("{tmp}/shadow", write("shadow", "root:$6$secrethash:19000:0")),
                                      "is not a .yaml or .yml file"),
    "base: a directory": (base_file("{tmp}/d.yaml", lambda tmp: (tmp / "d.yaml").mkdir()), "is a directory"),
    "base: a 1,200-deep chain": (base_chain(1200), "a chain of more than 32 base files"),
    "a 10,000-item list where a number goes": (sft_file("optim:\n  lr: [" + ", ".join(["1"] * 10_000) + "]\n"),
                                               "optim.lr expects float, got [1, 1, 1"),
    "float indices in a ranking": (ranking({"prompt": "p", "responses": ["a", "b", "c"], "ranking": [0.0, 2.0, 1.0]}),
                                   "prefs.jsonl, line 3: field 'ranking' must list each response index 0..2 once"),
    "an empty chosen response": (ranking({"prompt": "p", "chosen": " ", "rejected": "b"}),
                                 "prefs.jsonl, line 3: field 'chosen' is empty"),
    "raw HH strings that disagree before the answer": (ranking({"chosen": "\n\nHuman: hi\n\nAssistant: hello",
                                                                "rejected": "\n\nHuman: ho\n\nAssistant: no"}),
                                                       "differ before their last turn"),
    "HH markers inside a prompt that is not a transcript": (ranking({"prompt": "Intro\n\nHuman: how?\n\nAssistant: so",
                                                                     "chosen": "x", "rejected": "y"}),
                                                            "holds HH-style turn markers"),
    "refusal_message: no": (rules_file("refusal_message: no\ncategories:\n  a:\n    patterns: ['x']\n"),
                            "got the boolean false (YAML reads a bare no, yes, on or off so)"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_ends_in_a_clear_error(case, tmp_path):
    run, message = CASES[case]
    with pytest.raises(AlignkitError) as err:
        run(tmp_path)
    assert message in str(err.value)
    assert len(str(err.value)) < 600  # a message, not a dump of the input
    assert "secrethash" not in str(err.value)  # file content is never echoed


def test_user_files_in_output_model_survive(tmp_path):
    """The refusal above is what keeps them: nothing was deleted or written into model/."""
    with pytest.raises(AlignkitError):
        sft_run("output_dir={tmp}/run", setup=write("run/model/notes.txt", "mine"))(tmp_path)
    assert (tmp_path / "run" / "model" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "run" / "model").iterdir()) == ["notes.txt"]


def test_catastrophic_backtracking_rule_does_not_hang():
    """'(a+)+$' on 41 a's and a b takes ~2^41 steps in Python's re; RE2 answers at once (a hang would
    trip the alarm and fail the test)."""
    import signal

    from alignkit.safety.rules import parse_rules

    rules = parse_rules({"categories": {"a": {"patterns": ["(a+)+$"]}}})
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("the rule hung")))
    signal.alarm(10)
    try:
        assert rules.categories[0].find("a" * 41 + "b") is None
        assert rules.categories[0].find("a" * 41) is not None
    finally:
        signal.alarm(0)


def test_help_piped_into_head_ends_quietly():
    """`alignkit sft --help | head -1`: the reader closes the pipe early; that is no error (it was a
    BrokenPipeError traceback)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "alignkit", "sft", "--help"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()  # before the rest is written: the next write hits a closed pipe
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and "Traceback" not in err


def test_a_causal_lm_given_as_reward_model_is_refused(tiny_dir, reward_dir):
    """Any causal LM loads as a classifier with a fresh, random score head: PPO and eval would then run
    against noise. A directory `alignkit rm` wrote (the head's weights present) still loads."""
    from alignkit.errors import ModelError
    from alignkit.models.reward import load_reward_model

    with pytest.raises(ModelError, match="is not a trained reward model: it has no weights for score.weight"):
        load_reward_model(tiny_dir)
    assert load_reward_model(reward_dir)[1] == 0.25


def test_a_corrupt_newest_checkpoint_falls_back_to_the_one_before(tiny_dir, train_file, tmp_path, capsys):
    """Truncate the newest checkpoint's weights: the resume warns, restores the previous checkpoint and
    ends with exactly the weights of the run that never stopped."""
    from safetensors.torch import load_file

    from alignkit.stages.sft import run_sft

    def sft(out, *more):
        return run_sft(C.load_config(C.SFTConfig, None, [f"model.path={tiny_dir}", f"data.train_path={train_file}",
                                                         f"output_dir={out}", "log.progress=false", "data.max_length=64",
                                                         "train.max_steps=4", "checkpoint.save_every=1", "checkpoint.keep_last=3", *more]))

    straight = load_file(str(sft(tmp_path / "a") / "model.safetensors"))
    broken = tmp_path / "b"
    sft(broken)
    # An attempt that died after its step-3 checkpoint began to land: keep_last=3 left steps 2 to 4;
    # drop step 4 and the model, and truncate step 3.
    shutil.rmtree(broken / "model")
    shutil.rmtree(broken / "checkpoints" / "step-000004")
    (broken / "checkpoints" / "step-000003" / "model.safetensors").write_bytes(b"\x10\x00")
    capsys.readouterr()
    resumed = load_file(str(sft(broken, "resume=true") / "model.safetensors"))
    assert "step-000003 cannot be read" in capsys.readouterr().err
    assert resumed.keys() == straight.keys() and all(torch.equal(resumed[k], straight[k]) for k in straight)


def test_a_full_disk_at_the_final_save_is_a_clear_error_and_leaves_nothing(tmp_path):
    import errno

    from alignkit.models.saving import save_final_model

    class Model:
        def save_pretrained(self, path, **_):
            Path(path).mkdir(parents=True, exist_ok=True)
            (Path(path) / "model.safetensors").write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(AlignkitError, match="cannot write .*model: No space left on device"):
        save_final_model(Model(), None, tmp_path / "model")
    assert list(tmp_path.iterdir()) == []


def test_stale_half_written_checkpoints_are_removed(tmp_path):
    """A run killed while writing leaves .step-N.tmp-PID (model + optimizer sized); the next save
    removes it."""
    from alignkit.training.checkpoint import save_checkpoint

    stale = tmp_path / "checkpoints" / ".step-000007.tmp-99999"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"x" * 1000)
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    save_checkpoint(tmp_path, 8, model, optimizer, None)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000008"]


@pytest.fixture(scope="module")
def model_copies(tiny_dir, tmp_path_factory):
    """The tiny model three ways: config only, weights truncated, weights as a pickle with an object."""
    root = tmp_path_factory.mktemp("bad-models")
    (root / "config-only").mkdir()
    shutil.copy(tiny_dir / "config.json", root / "config-only")
    shutil.copytree(tiny_dir, root / "truncated")
    weights = (root / "truncated" / "model.safetensors").read_bytes()
    (root / "truncated" / "model.safetensors").write_bytes(weights[:1000])
    shutil.copytree(tiny_dir, root / "pickle")
    (root / "pickle" / "model.safetensors").unlink()
    torch.save({"weights": {}, "hook": Path("/")}, root / "pickle" / "pytorch_model.bin")  # not tensors only
    return root


@pytest.mark.parametrize("name, loader, message", [
    ("config-only", "tokenizer", "has no tokenizer (none of tokenizer.json"),
    ("truncated", "causal_lm", "the safetensors file is truncated or corrupt"),
    ("truncated", "reward", "the safetensors file is truncated or corrupt"),
    ("pickle", "causal_lm", "are a pickle (pytorch_model.bin) holding more than tensors"),
])
def test_model_directories_that_cannot_load_say_why(model_copies, name, loader, message):
    from alignkit.models import load_causal_lm, load_tokenizer
    from alignkit.models.reward import load_reward_backbone

    load = {"tokenizer": load_tokenizer, "causal_lm": load_causal_lm, "reward": load_reward_backbone}[loader]
    with pytest.raises(AlignkitError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load(model_copies / name)


def test_version(capsys):
    from alignkit.cli import main

    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("alignkit ")


def test_an_output_dir_that_cannot_be_written_is_a_clear_error(tmp_path, monkeypatch):
    """A read-only directory, simulated (these machines run as root, where chmod does not stop
    writes): the mkdir's PermissionError becomes a ConfigError naming the directory."""
    import errno

    def refuse(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(AlignkitError, match="cannot write to output_dir .*ro: Permission denied"):
        sft_run("output_dir={tmp}/ro")(tmp_path)
