"""Read rows from JSON, JSONL, Parquet, saved `datasets` directories and hub data sets
(`hf://org/name`), keeping where each came from.

JSON and JSONL are parsed here, line by line, so a broken line is reported by number (the `datasets`
JSON loader reports only that parsing failed). Parquet and saved directories go through `datasets`.
Each row comes back as a `Record`: its dict and a `where` string ("data.jsonl, line 7") that every
later error message uses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignkit.errors import DataError
from alignkit.hub import snapshot


@dataclass(frozen=True)
class Record:
    row: dict[str, Any]
    where: str


HUB_PREFIX = "hf://"
HUB_OPTIONS = ("split", "subset")


def read_records(path: str | Path, split: str = "train") -> list[Record]:
    """All rows of a data file, a saved dataset directory or a hub data set
    (`hf://org/name[@revision][?split=S&subset=C]`), each with its location."""
    if str(path).startswith(HUB_PREFIX):
        records = _read_hub_dataset(str(path), split)
        if not records:
            raise DataError(f"{path}: the data set holds no rows")
        return records
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir():
        records = _read_saved_dataset(path, split)
    elif path.suffix == ".jsonl":
        records = _read_jsonl(path)
    elif path.suffix == ".json":
        records = _read_json(path)
    elif path.suffix == ".parquet":
        records = _read_parquet(path)
    else:
        raise DataError(f"{path}: unknown data file type '{path.suffix}'; expected .json, .jsonl, .parquet "
                        "or a directory saved with datasets' save_to_disk")
    if not records:
        raise DataError(f"{path}: the file holds no rows")
    return records


def _decode(raw: bytes, path: Path, number: int) -> str:
    try:
        return raw.decode("utf-8-sig" if number == 1 else "utf-8")  # a leading BOM is tolerated
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}, line {number}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column "
                        f"{exc.start + 1}); re-save the file as UTF-8") from None


def _read_jsonl(path: Path) -> list[Record]:
    records = []
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            line = _decode(raw, path, number)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}")
            records.append(Record(row, f"{path}, line {number}"))
    return records


def _read_json(path: Path) -> list[Record]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); re-save the file as UTF-8") from None
    if not text.strip():
        raise DataError(f"{path}: the file is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # A .json file that is really JSON Lines is common enough to accept.
        if exc.msg == "Extra data":
            return _read_jsonl(path)
        raise DataError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of objects (or {{\"data\": [...]}}), got {type(data).__name__}")
    records = []
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise DataError(f"{path}, row {i}: expected a JSON object, got {type(row).__name__}")
        records.append(Record(row, f"{path}, row {i}"))
    return records


def _read_parquet(path: Path) -> list[Record]:
    from datasets import Dataset

    try:
        ds = Dataset.from_parquet(str(path))
    except Exception as exc:  # pyarrow raises many types for a broken file
        raise DataError(f"{path}: cannot read as Parquet ({exc})") from None
    return [Record(dict(row), f"{path}, row {i}") for i, row in enumerate(ds)]


def _read_saved_dataset(path: Path, split: str) -> list[Record]:
    from datasets import DatasetDict, load_from_disk

    try:
        ds = load_from_disk(str(path))
    except Exception as exc:
        raise DataError(f"{path}: not a directory saved with datasets' save_to_disk ({exc})") from None
    if isinstance(ds, DatasetDict):
        if split not in ds:
            raise DataError(f"{path}: no split '{split}' (has {', '.join(ds)}); set data.split")
        ds = ds[split]
    return [Record(dict(row), f"{path}, row {i}") for i, row in enumerate(ds)]


def _read_hub_dataset(spec: str, split: str) -> list[Record]:
    """A hub data set's split: the repository's snapshot from huggingface_hub's cache (downloading what
    is missing unless HF_HUB_OFFLINE is set), read by `datasets.load_dataset` as a local directory."""
    from urllib.parse import parse_qsl

    base, _, query = spec[len(HUB_PREFIX):].partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - set(HUB_OPTIONS))
    if unknown:
        raise DataError(f"{spec}: unknown option {unknown[0]!r}; a hub data set takes "
                        f"hf://org/name[@revision][?split=S&subset=C]")
    repo, _, revision = base.partition("@")
    if repo.count("/") != 1:
        raise DataError(f"{spec}: expected hf://org/name[@revision]")
    split, subset = options.get("split", split), options.get("subset") or None
    folder = snapshot(repo, revision, repo_type="dataset", name=spec, error=DataError, local="a local file")
    from datasets import load_dataset

    try:
        ds = load_dataset(str(folder), name=subset, split=split)
    except (ValueError, FileNotFoundError) as exc:  # an unknown split or subset, no data files
        raise DataError(f"{spec}: cannot read split '{split}'" + (f" of subset '{subset}'" if subset else "")
                        + f" ({str(exc).splitlines()[0][:200]})") from None
    return [Record(dict(row), f"{spec} ({split}), row {i}") for i, row in enumerate(ds)]


def write_jsonl_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    """One JSON object per line, written to a temporary file and renamed into place (a reader never
    sees half a file)."""
    import os

    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    os.replace(tmp, path)
