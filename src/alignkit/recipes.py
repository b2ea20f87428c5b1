"""The recipes shipped inside the package (src/alignkit/configs; `configs/` in a checkout links to
them): listed, found by name, copied out with the base files they build on."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from alignkit.errors import ConfigError

ROOT = Path(__file__).resolve().parent / "configs"
KINDS = (".yaml", ".json")


def names() -> list[str]:
    """Every recipe as NAME (its path under configs/ without .yaml: sft/lora, demo, accelerate/1gpu)."""
    return sorted(str(p.relative_to(ROOT).with_suffix("")) if p.suffix == ".yaml" else str(p.relative_to(ROOT))
                  for p in ROOT.rglob("*") if p.suffix in KINDS)


def find(name: str) -> Path | None:
    """The file of recipe NAME (with or without .yaml, with or without a leading configs/)."""
    name = name.removeprefix("configs/")
    for candidate in (ROOT / name, ROOT / f"{name}.yaml"):
        if candidate.is_file() and ROOT in candidate.resolve().parents:
            return candidate
    return None


def config_path(arg: str) -> str:
    """A stage command's config argument: a file that exists, else a recipe of that name."""
    if Path(arg).exists():
        return arg
    found = find(arg)
    return str(found) if found else arg  # the loader reports a missing file


def bases(path: Path) -> list[Path]:
    """The chain of `base:` files a recipe builds on (relative to it), nearest first."""
    out: list[Path] = []
    while True:
        match = re.search(r"^base:\s*['\"]?([^'\"\s#]+)", path.read_text(), re.M)
        if not match:
            return out
        path = (path.parent / match.group(1)).resolve()
        if path in out:
            return out
        out.append(path)


def copy(name: str, dest: str | Path) -> list[Path]:
    """Copy recipe NAME to DEST (a file, or a directory to copy into), with its base files beside it
    so `base:` still resolves. Returns the files written. Refuses to overwrite."""
    src = find(name)
    if src is None:
        import difflib

        close = difflib.get_close_matches(name, names(), n=3)
        raise ConfigError(f"no recipe named '{name}'" + (f"; did you mean {', '.join(close)}?" if close else "")
                          + " (alignkit configs ls lists them)")
    into = str(dest).endswith(("/", "\\")) or Path(dest).is_dir()  # DEST/ names a folder, made if need be
    dest = Path(dest)
    target = dest / src.name if into else dest
    plan = [(src, target)]
    for base in bases(src):
        try:
            plan.append((base, target.parent / base.relative_to(src.parent.resolve())))
        except ValueError:
            raise ConfigError(f"recipe '{name}' builds on {base} outside its folder; copy that one too") from None
    for _, out in plan:
        if out.exists():
            raise ConfigError(f"{out} exists; choose another destination or remove it first")
    for s, out in plan:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(s, out)
    return [out for _, out in plan]
