"""The general YAML-to-dataclass loader: field docstrings, strict typed loading with errors that name
the file, line and closest key, `base:` chains, key=value overrides, and --help.

Every field has a docstring (the string literal under it, cleanrl style); `field_docs` reads them
so `alignkit sft --help` can list each key with its type, default and meaning. Loading is strict:
an unknown key is an error that names the file, the line and the closest valid key, and a value of
the wrong type is an error that names the key and the expected type.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import re
import textwrap
import types
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml

from alignkit.errors import ConfigError


@lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass, read from its source."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _short(value: Any, limit: int = 80) -> str:
    """A value for an error message: its repr, cut to `limit` characters (a 10,000-item list in the
    wrong place must not become a 10,000-item message)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(str(a) for a in typing.get_args(tp))
    if origin in (list, typing.List):
        (inner,) = typing.get_args(tp)
        return f"list[{_type_name(inner)}]"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    """Check (and lightly convert) a YAML value against a field's annotation."""
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{where}: {key} expects {_type_name(tp)}, got {_short(value)}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, bool) and "on" in choices:  # YAML reads on/off as booleans
            value = "on" if value else "off"
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{where}: {key} must be one of {', '.join(map(str, choices))}; got {_short(value)}{hint}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, where)
            except ConfigError:
                pass
        raise bad
    if origin in (list, typing.List):
        (inner,) = typing.get_args(tp)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and inner in (str, int, float):
            # `stages=sft,rm` or `seeds=0,1,2` on the command line: a comma-separated list
            value = [v.strip() if inner is str else yaml.safe_load(v) for v in str(value).split(",") if v.strip()]
        if not isinstance(value, list):
            raise bad
        return [_coerce(v, inner, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string
                try:
                    return float(value)
                except ValueError:
                    raise bad from None
            raise bad
        return float(value)
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise bad
        return value
    return value


def from_dict(cls: type, data: dict[str, Any], where: str, prefix: str = "", lines: dict[str, int] | None = None):
    """Build a dataclass from a nested dict; unknown keys and wrong types raise ConfigError."""
    lines = lines or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: '{prefix.rstrip('.') or 'top level'}' must be a mapping, got {_short(data)}")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        at = f"{where}, line {lines[full]}" if full in lines else where
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
            if not close:  # a key that belongs one level down or up, e.g. `lr` for `optim.lr`
                close = [k for k in all_keys(cls) if k.split(".")[-1] == key][:1]
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(names)}"
            raise ConfigError(f"{at}: unknown key '{full}'{hint}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"{at}: '{full}' is a section and must be a mapping of keys, got {_short(value)}")
            # Start from the parent's own default for the section (its default_factory may differ
            # from the section class's defaults, e.g. DPO's optim.lr), then apply the keys given.
            given = value if value is not None else {}
            kwargs[key] = _merge(getattr(_default(cls), key), from_dict(tp, given, where, f"{full}.", lines), given)
        else:
            kwargs[key] = _coerce(value, tp, full, at)
    return cls(**kwargs)


def all_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of a config class, nested sections expanded."""
    keys = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            keys += all_keys(tp, f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _field_type(cls: type, keys: list[str]) -> Any:
    """The annotation at a dotted path, or None if the path is not a field."""
    tp: Any = cls
    for key in keys:
        if not dataclasses.is_dataclass(tp):
            return None
        hints = _hints(tp)
        if key not in hints:
            return None
        tp = hints[key]
    return tp


class _Loader(yaml.SafeLoader):
    """YAML without implicit dates (`2024-01-01` stays text, as every config value that looks like
    one is a name or a path) and without aliases: a few nested `*alias`es expand a 1 KB file into
    gigabytes (the "billion laughs"), and no config needs them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"an alias (*{event.anchor}) is not accepted here: write the "
                                              "value out", event.start_mark)
        return super().compose_node(parent, index)


def _mapping_without_repeats(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    """A YAML mapping; a key given twice is an error (plain YAML keeps the last one silently)."""
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key '{key}' appears twice (first on line {seen[key]})", key_node.start_mark)
        seen[key] = key_node.start_mark.line + 1
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_repeats)
_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def read_yaml(text: str, where: str) -> Any:
    """A YAML document as Python values, read as every alignkit file is (no implicit dates, no
    repeated keys, no aliases); invalid YAML is a ConfigError naming `where` and the line."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f", line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{where}{at}: not valid YAML ({getattr(exc, 'problem', exc)})") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """`optim.lr=1e-4` -> (['optim', 'lr'], 0.0001); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key=value, e.g. optim.lr=1e-4")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has no key")
    try:
        value = yaml.load(raw, Loader=_Loader) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def yaml_key_lines(text: str) -> dict[str, int]:
    """Map each dotted key in a YAML document to its 1-based line, for error messages."""
    lines: dict[str, int] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode):
                    full = f"{prefix}{k.value}"
                    lines[full] = k.start_mark.line + 1
                    walk(v, f"{full}.")

    try:
        root = yaml.compose(text, Loader=_Loader)  # no aliases: a shared node would be walked again and again
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, "")
    return lines


def load_config(cls: type, path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()):
    """Load a stage config from an optional YAML file plus key=value overrides, then validate it.

    A file may start from another: `base: other.yaml` (relative to the file) loads that one first and
    applies this file's keys on top, so a variant (configs/demo-full.yaml) repeats nothing."""
    where = str(path) if path is not None else "defaults"
    cfg = _load_file(cls, Path(path)) if path is not None else from_dict(cls, {}, where)
    for text in overrides:
        keys, value = parse_override(text)
        if _field_type(cls, keys) is str:  # a name or path: keep it exactly as typed (010, 1_000, no)
            value = text.split("=", 1)[1]
        nested: dict[str, Any] = {}
        cursor = nested
        for k in keys[:-1]:
            cursor = cursor.setdefault(k, {})
        cursor[keys[-1]] = value
        patch = from_dict(cls, nested, f"override '{text}'")
        cfg = _merge(cfg, patch, nested)
    if hasattr(cfg, "validate"):
        cfg.validate(where if not overrides else f"{where} with overrides {' '.join(overrides)}")
    return cfg


MAX_BASE_DEPTH = 32


def _load_file(cls: type, path: Path, chain: tuple[Path, ...] = ()) -> Any:
    """The config a YAML file describes (its `base` first, if it names one), not yet validated."""
    of = f" (the base of {chain[-1]})" if chain else ""
    if path.is_dir():
        raise ConfigError(f"config file {path}{of} is a directory; expected a .yaml file")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist{of}")
    if chain and path.suffix not in (".yaml", ".yml"):
        # Never read (let alone quote in an error) a file that is not a config: `base: /etc/shadow`.
        raise ConfigError(f"{chain[-1]}: base {path} is not a .yaml or .yml file")
    if len(chain) >= MAX_BASE_DEPTH:
        raise ConfigError(f"{chain[0]}: a chain of more than {MAX_BASE_DEPTH} base files; bases are meant to be one "
                          "or two levels deep")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}{of} cannot be read as text ({type(exc).__name__})") from None
    loaded = read_yaml(text, str(path))
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(loaded).__name__}")
    lines = yaml_key_lines(text)
    base = loaded.pop("base", None)
    if base is None:
        return from_dict(cls, loaded, str(path), lines=lines)
    if not isinstance(base, str):
        raise ConfigError(f"{path}, line {lines.get('base', '?')}: base must be a path to another YAML file")
    base_path = (path.parent / base).resolve()
    if base_path in chain or base_path == path.resolve():
        raise ConfigError(f"{path}: base {base} leads back to itself")
    return _merge(_load_file(cls, base_path, (*chain, path.resolve())), from_dict(cls, loaded, str(path), lines=lines),
                  loaded)


def _default(cls: type) -> Any:
    """The dataclass with every default (a fresh one: nothing is shared between configs)."""
    return cls()


def _merge(base: Any, patch: Any, present: dict[str, Any]) -> Any:
    """Copy of `base` with the fields named in `present` taken from `patch` (recursively). A section
    given as nothing (`dpo:` with every key commented out) keeps base's section."""
    changes = {}
    for key, value in present.items():
        sub = getattr(patch, key)
        if value is None and dataclasses.is_dataclass(sub):
            continue
        if isinstance(value, dict) and dataclasses.is_dataclass(sub):
            changes[key] = _merge(getattr(base, key), sub, value)
        else:
            changes[key] = sub
    return dataclasses.replace(base, **changes)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def describe(cls: type, prefix: str = "", default: Any = None) -> list[tuple[str, str, str, str]]:
    """(key, type, default, doc) for every field, nested sections expanded: the CLI's --help. A
    section's defaults are the enclosing config's (PPO's optim.lr is 1e-5, not OptimConfig's 2e-5)."""
    rows = []
    hints = _hints(cls)
    docs = field_docs(cls)
    default = cls() if default is None else default
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows += describe(tp, f"{prefix}{f.name}.", getattr(default, f.name))
        else:
            rows.append((f"{prefix}{f.name}", _type_name(tp), repr(getattr(default, f.name)), docs.get(f.name, "")))
    return rows


def with_defaults(recorded: Any, defaults: Any) -> Any:
    """`recorded` with every key it lacks (at any depth) taken from `defaults`."""
    if not isinstance(recorded, dict) or not isinstance(defaults, dict):
        return recorded
    return {**defaults, **{k: with_defaults(v, defaults.get(k)) for k, v in recorded.items()}}


# Fields that name a file, directory, model or data set (besides every *_path).
PATH_FIELDS = {"path", "reward_model", "reference_model", "teacher", "judge_model", "judge_template",
               "refusal_template", "filter_rules", "reward_ensemble", "models", "filter_model", "sft_filter_model",
               "cost_model"}
HUB_LIKE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


def missing_paths(cfg: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(key, value) of every path the config names that does not exist here. Hub ids (org/name) and
    hub data sets (hf://...) are not checked: they resolve through the hub cache when a stage runs."""
    out: list[tuple[str, str]] = []
    for f in dataclasses.fields(cfg):
        value, key = getattr(cfg, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out += missing_paths(value, f"{key}.")
            continue
        if not (f.name in PATH_FIELDS or f.name.endswith("_path")):
            continue
        for item in value if isinstance(value, list) else [value]:
            text = str(item).split("=", 1)[-1] if f.name == "models" else str(item)  # eval's NAME=PATH
            if not text or "://" in text or Path(text).expanduser().exists():
                continue
            if HUB_LIKE.match(text) and ".." not in text:
                continue
            out.append((key, text))
    return out
