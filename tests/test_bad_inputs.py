"""The bad-input catalogue: inputs a careless or hostile user gives, each of which must end in a clear
error (an AlignkitError naming the file, line or key) and never in a traceback, a hang, memory
exhaustion or a lost file. Each case was found by trying it; the message fragment is what it must say.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

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
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_ends_in_a_clear_error(case, tmp_path):
    run, message = CASES[case]
    with pytest.raises(AlignkitError) as err:
        run(tmp_path)
    assert message in str(err.value)
    assert len(str(err.value)) < 600  # a message, not a dump of the input


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
