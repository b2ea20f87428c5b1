r"""Safety rules: named categories of regexes, loaded from YAML and validated strictly.

Format::

    refusal_message: "Sorry, I can't help with that."   # optional; the reply to a blocked item
    words:                                               # optional: named regex pieces
      weapon: '(?:bombs?|grenades?|guns?)'
    categories:                                          # required, at least one
      weapons:
        patterns: ['\b(?:build|make)\s+(?:a|an)\s+{weapon}\b']   # required: regexes, case-insensitive
        allow: ['\bbath bombs?\b']       # optional: benign look-alikes that excuse a match
        applies_to: [input, output]      # optional, default both
        message: "..."                   # optional: this category's reply instead of refusal_message

Write regexes in single quotes so YAML keeps backslashes as they are (an apostrophe inside single
quotes is written ''). A category blocks a text when one of its patterns matches and no allow
pattern covers it: the words allow patterns match are blanked out and the patterns run again on what
is left, so an allow entry excuses only the words it covers ("make a bath bomb, then build a bomb" is
still blocked). A pattern that matches only empty text never blocks. `{name}` in a pattern (a name of
letters, digits and underscores, starting with a letter; regex counts like {2,3} are left alone) is
replaced by the `words` entry of that name, wrapped in a group; a word may use words defined above it.

`classifier:` adds a learned layer beside the rules (alignkit/safety/classifier.py)::

    classifier:
      path: runs/cost/model   # relative to this file when it exists there
      threshold: 0.0          # scores above it are unsafe (0: a cost model's boundary)
      combine: either         # either | both | rules | classifier
      applies_to: [input]     # input and/or output

Rules match the normalised views of a text (`alignkit.safety.normalize`: lower case, NFKC, no invisible
characters or accents, look-alike letters folded, leetspeak read, spelt-out words joined), so write them
in plain lower-case ASCII with straight apostrophes.

Loading is strict: an unknown key names the file, the line and the closest valid key; a bad regex
names the category, the pattern and the regex error. Every problem raises ConfigError.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from alignkit.config import read_yaml, yaml_key_lines  # the stage configs' YAML reading
from alignkit.errors import ConfigError
from alignkit.safety.classifier import COMBINE, Classifier, check_path, resolve_path

SIDES = ("input", "output")
TOP_KEYS = ("refusal_message", "words", "categories", "classifier")
CLASSIFIER_KEYS = ("path", "threshold", "combine", "applies_to", "max_length", "batch_size")
_WORD_REF = re.compile(r"\{([A-Za-z][A-Za-z0-9_]*)\}")
CATEGORY_KEYS = ("patterns", "allow", "applies_to", "message")
DEFAULT_REFUSAL = "Sorry, I can't help with that."
DEFAULT_RULES_PATH = Path(__file__).with_name("default_rules.yaml")

Pattern = Any  # a compiled RE2 pattern (compile_linear): search, finditer, match, .pattern


@dataclass(frozen=True)
class Rule:
    """A pattern as written (with its {words}) and compiled (words expanded)."""

    source: str
    rx: Pattern

    def finditer(self, text: str) -> Any:
        return self.rx.finditer(text)


@dataclass(frozen=True)
class Hit:
    """A pattern that matched, and the allow pattern that excuses it (None: it blocks)."""

    pattern: str
    excused_by: str | None = None


@dataclass(frozen=True)
class Category:
    name: str
    patterns: tuple[Rule, ...]
    allow: tuple[Rule, ...] = ()
    applies_to: frozenset[str] = frozenset(SIDES)
    message: str | None = None

    def find(self, text: str) -> Hit | None:
        """The first blocking hit in `text`; else the first excused one; else None.

        The words an allow pattern matches are blanked out (same length, so positions hold) and the
        patterns run again on what is left: an allow entry excuses only the words it covers."""
        allowed = [(a.source, m.span()) for a in self.allow for m in a.finditer(text) if m.end() > m.start()]
        masked = list(text)
        for _, (s, e) in allowed:
            masked[s:e] = " " * (e - s)
        left = "".join(masked)
        for p in self.patterns:
            if _nonempty_match(p, left):
                return Hit(p.source)
        for p in self.patterns:  # matched only through allowed words: say which allow entry excused it
            m = _nonempty_match(p, text)
            if m is not None:
                cover = next((a for a, (s, e) in allowed if s < m.end() and m.start() < e), allowed[0][0])
                return Hit(p.source, cover)
        return None


def _nonempty_match(pattern: Rule, text: str) -> Any:
    """The first match that covers at least one character (a pattern that can match nothing, like
    '\\b(?:bomb)?', would otherwise block every text)."""
    return next((m for m in pattern.finditer(text) if m.end() > m.start()), None)


@dataclass(frozen=True)
class Rules:
    categories: tuple[Category, ...]
    refusal_message: str = DEFAULT_REFUSAL
    source: str = "<rules>"
    classifier: Classifier | None = field(default=None, compare=False, hash=False)
    """The learned layer the file names (`classifier:`), if any."""

    def message_for(self, category: str | None) -> str:
        """The reply for a block in `category`: its own message, else the refusal message."""
        own = next((c.message for c in self.categories if c.name == category), None)
        return own or self.refusal_message


def load_rules(path: str | Path | None = None) -> Rules:
    """Rules from a YAML file; the shipped default rules when `path` is None."""
    path = Path(path) if path is not None else DEFAULT_RULES_PATH
    if not path.is_file():
        raise ConfigError(f"rules file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    data = read_yaml(text, str(path))
    return parse_rules(data, str(path), yaml_key_lines(text))


def parse_rules(data: Any, where: str = "<rules>", lines: dict[str, int] | None = None) -> Rules:
    """Rules from already-parsed YAML; `lines` maps dotted keys to lines for error messages."""
    lines = lines or {}
    if data is None:
        raise ConfigError(f"{where}: the rules file is empty; it needs a 'categories' mapping")
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping with 'categories', got {type(data).__name__}")
    _check_keys(data, TOP_KEYS, where, "", lines)
    cats = data.get("categories")
    if not isinstance(cats, dict) or not cats:
        raise ConfigError(f"{_at(where, lines, 'categories')}: 'categories' must be a non-empty mapping of "
                          f"category name -> {{patterns: [...]}}, got {cats!r}")
    refusal = data.get("refusal_message", DEFAULT_REFUSAL)
    if not isinstance(refusal, str) or not refusal.strip():
        raise ConfigError(f"{_at(where, lines, 'refusal_message')}: 'refusal_message' must be non-empty text"
                          + _yaml_boolean_hint(refusal))
    words = _words(data.get("words"), where, lines)
    categories = tuple(_category(str(name), spec, where, lines, words) for name, spec in cats.items())
    classifier = _classifier(data["classifier"], where, lines) if data.get("classifier") is not None else None
    return Rules(categories, refusal, where, classifier)


def _classifier(spec: Any, where: str, lines: dict[str, int]) -> Classifier:
    """The `classifier:` section: path (required), threshold, combine, applies_to, max_length, batch_size."""
    at = _at(where, lines, "classifier")
    if isinstance(spec, str):
        spec = {"path": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("path"), str) or not spec["path"].strip():
        raise ConfigError(f"{at}: 'classifier' must be a model path or a mapping with 'path' (a sequence-classification "
                          f"model, e.g. a cost model from `alignkit rm objective=cost`), got {spec!r}")
    _check_keys(spec, CLASSIFIER_KEYS, where, "classifier.", lines)
    combine = spec.get("combine", "either")
    if combine not in COMBINE:
        raise ConfigError(f"{_at(where, lines, 'classifier.combine')}: classifier.combine must be one of "
                          f"{', '.join(COMBINE)}, got {combine!r}{_suggest(str(combine), COMBINE)}")
    threshold = spec.get("threshold", 0.0)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise ConfigError(f"{_at(where, lines, 'classifier.threshold')}: classifier.threshold must be a number, got {threshold!r}")
    sides = spec.get("applies_to", ["input"])
    sides = [sides] if isinstance(sides, str) else sides
    if not isinstance(sides, list) or not sides or any(side not in SIDES for side in sides):
        raise ConfigError(f"{_at(where, lines, 'classifier.applies_to')}: classifier.applies_to must be a non-empty list "
                          f"of {' and/or '.join(SIDES)}, got {sides!r}")
    sizes = {}
    for key, default in (("max_length", 256), ("batch_size", 32)):
        value = spec.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{_at(where, lines, 'classifier.' + key)}: classifier.{key} must be a positive integer, "
                              f"got {value!r}")
        sizes[key] = value
    path = check_path(resolve_path(spec["path"], where if where != "<rules>" else None),
                      _at(where, lines, "classifier.path"))
    return Classifier(path, float(threshold), combine, frozenset(sides), **sizes)


def _words(raw: Any, where: str, lines: dict[str, int]) -> dict[str, str]:
    """The named regex pieces, each expanded with the words above it."""
    if raw is None:
        return {}
    at = _at(where, lines, "words")
    if not isinstance(raw, dict):
        raise ConfigError(f"{at}: 'words' must be a mapping of name -> regex piece, got {raw!r}")
    words: dict[str, str] = {}
    for name, piece in raw.items():
        if not isinstance(piece, str) or not piece.strip() or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", str(name)):
            raise ConfigError(f"{_at(where, lines, f'words.{name}')}: words entry '{name}' must be a name of letters, "
                              f"digits and _ mapped to a non-empty regex string, got {piece!r}")
        words[str(name)] = _expand(piece, words, f"{_at(where, lines, f'words.{name}')}: words entry '{name}'")
    return words


def _expand(pattern: str, words: dict[str, str], what: str) -> str:
    """`pattern` with each {name} replaced by its word, in a non-capturing group."""
    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in words:
            hint = difflib.get_close_matches(name, list(words), n=1, cutoff=0.5)
            defined = f" (defined: {', '.join(words)})" if words else ""
            raise ConfigError(f"{what}: unknown word '{{{name}}}'"
                              + (f"; did you mean '{{{hint[0]}}}'?" if hint else "; define it under 'words'" + defined))
        return f"(?:{words[name]})"
    return _WORD_REF.sub(sub, pattern)


def _category(name: str, spec: Any, where: str, lines: dict[str, int], words: dict[str, str]) -> Category:
    key = f"categories.{name}"
    at = _at(where, lines, key)
    if not isinstance(spec, dict):
        raise ConfigError(f"{at}: category '{name}' must be a mapping with 'patterns', got {spec!r}")
    _check_keys(spec, CATEGORY_KEYS, where, f"{key}.", lines)
    if not spec.get("patterns"):
        raise ConfigError(f"{at}: category '{name}' needs a non-empty 'patterns' list")
    patterns = _compile(spec["patterns"], "patterns", name, where, lines, words)
    allow = _compile(spec.get("allow") or [], "allow", name, where, lines, words)
    sides = spec.get("applies_to", list(SIDES))
    if isinstance(sides, str):
        sides = [sides]
    if not isinstance(sides, list) or not sides:
        raise ConfigError(f"{_at(where, lines, key + '.applies_to')}: category '{name}': 'applies_to' must be "
                          f"a non-empty list of {' and/or '.join(SIDES)}")
    for side in sides:
        if side not in SIDES:
            raise ConfigError(f"{_at(where, lines, key + '.applies_to')}: category '{name}': unknown side "
                              f"'{side}' in applies_to{_suggest(str(side), SIDES)}")
    message = spec.get("message")
    if message is not None and (not isinstance(message, str) or not message.strip()):
        raise ConfigError(f"{_at(where, lines, key + '.message')}: category '{name}': 'message' must be non-empty text"
                          + _yaml_boolean_hint(message))
    return Category(name, patterns, allow, frozenset(sides), message)


def compile_linear(pattern: str, what: str) -> Any:
    """`pattern`, case-insensitive, compiled by RE2: matching takes time linear in the text, so a
    rule like '(a+)+$' cannot hang the filter on a long line (Python's re backtracks exponentially).
    RE2 has no lookarounds or backreferences; a pattern that needs them is refused, named."""
    import re2

    options = re2.Options()
    options.case_sensitive = False
    options.log_errors = False
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        try:
            re.compile(pattern)
        except re.error:
            raise ConfigError(f"{what} '{pattern}' is not a valid regex ({reason})") from None
        raise ConfigError(f"{what} '{pattern}' needs a construct the linear-time regex engine (RE2) does not have "
                          f"({reason}): lookarounds, backreferences and \\u escapes are not accepted") from None


def _compile(raw: Any, field: str, name: str, where: str, lines: dict[str, int],
             words: dict[str, str]) -> tuple[Rule, ...]:
    at = _at(where, lines, f"categories.{name}.{field}")
    if not isinstance(raw, list):
        raise ConfigError(f"{at}: category '{name}': '{field}' must be a list of regexes, got {raw!r}")
    out = []
    for pattern in raw:
        if not isinstance(pattern, str) or not pattern.strip():
            raise ConfigError(f"{at}: category '{name}': {field} entry {pattern!r} must be a non-empty regex string")
        rx = compile_linear(_expand(pattern, words, f"{at}: category '{name}': {field} pattern '{pattern}'"),
                            f"{at}: category '{name}': {field} pattern")
        if any(ord(c) < 32 for c in pattern):
            raise ConfigError(f"{at}: category '{name}': {field} pattern {pattern!r} holds a control character; "
                              "in double quotes YAML turns '\\b' into a backspace: write regexes in single quotes")
        if rx.match(""):  # it would match at every position of every text
            raise ConfigError(f"{at}: category '{name}': {field} pattern '{pattern}' matches empty text")
        out.append(Rule(pattern, rx))
    return tuple(out)


def _yaml_boolean_hint(value: Any) -> str:
    """YAML reads a bare no/yes/on/off as a boolean: say so, since the file shows text."""
    if isinstance(value, bool):
        return f", got the boolean {str(value).lower()} (YAML reads a bare no, yes, on or off so): put the text in quotes"
    return ""


def _check_keys(data: dict, valid: tuple[str, ...], where: str, prefix: str, lines: dict[str, int]) -> None:
    for key in data:
        if key not in valid:
            full = f"{prefix}{key}"
            raise ConfigError(f"{_at(where, lines, full)}: unknown key '{full}'{_suggest(str(key), valid, prefix)}")


def _suggest(key: str, valid: tuple[str, ...], prefix: str = "") -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f"; did you mean '{prefix}{close[0]}'?" if close else f"; expected one of {', '.join(valid)}"


def _at(where: str, lines: dict[str, int], key: str) -> str:
    return f"{where}, line {lines[key]}" if key in lines else where
