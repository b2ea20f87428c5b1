"""Read rows from JSON, JSONL, Parquet and saved `datasets` directories, keeping where each came from.

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


@dataclass(frozen=True)
class Record:
    row: dict[str, Any]
    where: str


def read_records(path: str | Path, split: str = "train") -> list[Record]:
    """All rows of a data file or saved dataset directory, each with its location."""
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
