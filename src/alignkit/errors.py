"""The errors alignkit raises on bad input. The CLI prints them without a traceback."""


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
