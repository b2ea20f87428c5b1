"""The simulated annotator fills a ranking sheet, as a person would (for the end-to-end loop)."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from alignkit.data.sheets import LETTERS
from alignkit.errors import DataError
from alignkit.world.oracle import annotate_ranking
from alignkit.world.tasks import Item


def fill_ranking_sheet(sheet_csv: str | Path, key_json: str | Path, label_noise: float = 0.0, seed: int = 0) -> int:
    """Write the annotator's order into every row of a sheet whose items come from the world (their
    key carries family, answer and params). Returns the number of rows filled."""
    key = json.loads(Path(key_json).read_text())["items"]
    rng = random.Random(seed)
    with open(sheet_csv, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns, rows = reader.fieldnames or [], list(reader)
    for line, row in enumerate(rows, start=2):
        extra = key.get(row["item"], {}).get("extra", {})
        if "family" not in extra or "answer" not in extra:
            raise DataError(f"{sheet_csv}, line {line}: item {row['item']} has no world fields (family, answer); "
                            "only prompts from the demo world can be annotated by the oracle")
        item = Item(extra["family"], row["prompt"], extra["answer"], extra.get("params", {}), extra.get("template", 0),
                    extra.get("harmful", False))
        letters = LETTERS[:len(key[row["item"]]["shown"])]
        order = annotate_ranking(item, [row[c] for c in letters], label_noise, rng)
        row["order"] = ">".join(letters[i] for i in order)
    with open(sheet_csv, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)
