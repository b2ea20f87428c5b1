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
    for path in (sheet_csv, key_json):
        if not Path(path).is_file():
            raise DataError(f"{path} does not exist (expected the sheet .csv and key .json of "
                            "`alignkit data export-ranking`)")
    try:
        key = json.loads(Path(key_json).read_text())["items"]
    except (ValueError, KeyError, TypeError):
        raise DataError(f"{key_json}: not a ranking sheet's key (JSON with an 'items' mapping)") from None
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


def rate_samples(rows: list[dict], label_noise: float, seed: int | str) -> list[dict]:
    """The annotator's ratings of a policy's samples: rows {"prompt", "responses", world fields} ->
    rated rows {"prompt", "responses", "scores", ...}, the score of a response its grade, so equal
    grades are ties and give no pair (two different wrong answers are not ordered at random, as a
    strict ranking would have to); a prompt whose samples all tie is left out. With probability `label_noise` the scores of one adjacent pair of
    distinct grades are swapped, as the annotator's rankings swap one adjacent pair."""
    from alignkit.world.oracle import grade
    from alignkit.world.safety import is_safety
    from alignkit.world.tasks import item_from_dict

    rng = random.Random(seed)
    out = []
    for row in rows:
        item = item_from_dict(row)
        scores = [grade(item, r) for r in row["responses"]]
        levels = sorted(set(scores))
        if len(levels) < 2:  # every sample as good as the others: no preference to learn
            continue
        if rng.random() < label_noise:
            j = rng.randrange(len(levels) - 1)
            low, high = levels[j], levels[j + 1]
            scores = [high if s == low else low if s == high else s for s in scores]
        out.append({"prompt": row["prompt"], "responses": list(row["responses"]), "scores": scores,
                    "family": row["family"], "source": "safety" if is_safety(row["family"]) else "skills"})
    return out
