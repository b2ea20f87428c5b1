"""The errors alignkit raises on bad input. The CLI prints them without a traceback."""

from __future__ import annotations

from pathlib import Path


class AlignkitError(Exception):
    """Base class: a user-facing problem with a message that says what was expected."""


class ConfigError(AlignkitError):
    """A config file or override is wrong: names the file, line or key."""


class DataError(AlignkitError):
    """A data file is wrong: names the file, the row or line, and the field."""


class ModelError(AlignkitError):
    """A model or tokenizer cannot be loaded as asked."""


class TrainingDiverged(AlignkitError):
    """The loss became NaN or infinite: nothing is saved from a diverged run."""


def write_failure(path: Path, exc: Exception) -> Exception:
    """A failed write as a clear error (a full disk, a read-only directory); other errors unchanged."""
    text = str(exc)
    if isinstance(exc, OSError) or "No space left" in text or "Read-only" in text or "Permission denied" in text:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else text
        return AlignkitError(f"cannot write {path}: {reason} (nothing partial was left behind; free space or "
                             "choose another output_dir, then run again with resume=true)")
    return exc
