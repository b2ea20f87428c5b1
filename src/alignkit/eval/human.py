"""Human evaluation of two models: a blinded, shuffled side-by-side sheet out, ratings back in.

sheet.csv    item, prompt, A, B, preference     (a rater writes A, B or tie in `preference`)
sheet.html   the same, readable, one A / B / tie choice per item and a button that saves the CSV
key.json     which model each letter shows, per item (the sheet itself never names a model)

Import unblinds the ratings with the key and gives the first model's win rate over the second, with
its 95% interval and the tie rate (eval.judges.win_rate_summary).
"""

from __future__ import annotations

import csv
import html
import json
import random
from pathlib import Path
from typing import Any

from alignkit.data.records import read_records
from alignkit.data.sheets import save_csv_button
from alignkit.errors import DataError
from alignkit.eval.judges import win_rate_summary

# The page's script: copy each item's checked A / B / tie into its row before the CSV is saved.
FILL_PREFERENCES = ("rows.forEach(r => { const c = document.querySelector(`input[name=\"${r.item}\"]:checked`); "
                    "r.preference = c ? c.value : ''; });")
CHOICES = {"a": "A", "b": "B", "tie": "tie", "=": "tie", "same": "tie"}


def export_human_sheet(responses_path: str | Path, model_a: str, model_b: str, out_dir: str | Path,
                       seed: int = 0) -> dict[str, Path]:
    """Write sheet.csv, sheet.html and key.json from `alignkit eval`'s responses.jsonl (rows with
    "messages" and one field per model), the two models' order shuffled per item."""
    rng = random.Random(seed)
    rows, key = [], {}
    records = read_records(responses_path)
    order = list(range(len(records)))
    rng.shuffle(order)  # the items too, so neighbouring prompts do not hint at a pattern
    for n, i in enumerate(order):
        record = records[i]
        for name in (model_a, model_b):
            if not isinstance(record.row.get(name), str):
                raise DataError(f"{record.where}: no response of model '{name}' (fields: {', '.join(record.row)})")
        messages = record.row.get("messages") or [{"role": "user", "content": record.row.get("prompt", "")}]
        shown = [model_a, model_b] if rng.random() < 0.5 else [model_b, model_a]
        item = f"item-{n + 1:04d}"
        key[item] = {"A": shown[0], "B": shown[1], "source": record.where}
        rows.append({"item": item, "prompt": messages[-1]["content"], "A": record.row[shown[0]],
                     "B": record.row[shown[1]], "preference": ""})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "sheet.csv", "html": out / "sheet.html", "key": out / "key.json"}
    columns = ["item", "prompt", "A", "B", "preference"]
    with paths["csv"].open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    paths["key"].write_text(json.dumps({"models": [model_a, model_b], "items": key}, indent=1) + "\n")
    paths["html"].write_text(_html(rows, columns), encoding="utf-8")
    return paths


def import_human_sheet(sheet_csv: str | Path, key_json: str | Path) -> dict[str, Any]:
    """The first model's win rate over the second from a filled sheet: wins, losses, ties, interval."""
    key = json.loads(Path(key_json).read_text())
    first, items = key["models"][0], key["items"]
    outcomes, seen = [], set()
    with open(sheet_csv, newline="", encoding="utf-8") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            where = f"{sheet_csv}, line {line}"
            item = row.get("item", "")
            if item not in items:
                raise DataError(f"{where}: item '{item}' is not in {key_json} (a sheet and key from different exports?)")
            choice = CHOICES.get((row.get("preference") or "").strip().lower())
            if choice is None:
                raise DataError(f"{where} ({item}): preference '{row.get('preference', '')}' is not A, B or tie")
            seen.add(item)
            if choice == "tie":
                outcomes.append("tie")
            else:
                outcomes.append("a" if items[item][choice] == first else "b")
    missing = sorted(set(items) - seen)
    if missing:
        raise DataError(f"{sheet_csv}: {len(missing)} item(s) of the key are not rated, e.g. {missing[0]}")
    return {"model": first, "versus": key["models"][1], **win_rate_summary(outcomes)}


def _html(rows: list[dict[str, str]], columns: list[str]) -> str:
    cards = []
    for r in rows:
        radios = "".join(f"<label><input type='radio' name='{r['item']}' value='{v}'> {v}</label> "
                         for v in ("A", "B", "tie"))
        cards.append(f"<section><h3>{r['item']}</h3><p class='prompt'>{html.escape(r['prompt'])}</p>"
                     f"<div class='pair'><div><b>A</b><pre>{html.escape(r['A'])}</pre></div>"
                     f"<div><b>B</b><pre>{html.escape(r['B'])}</pre></div></div><p>Better: {radios}</p></section>")
    return f"""<!doctype html><meta charset="utf-8"><title>alignkit side-by-side</title>
<style>body{{font-family:sans-serif;max-width:60rem;margin:2rem auto}}section{{border:1px solid #ccc;padding:.5rem 1rem;
margin:1rem 0;border-radius:6px}}.prompt{{font-weight:bold}}.pair{{display:grid;grid-template-columns:1fr 1fr;gap:1rem}}
pre{{white-space:pre-wrap}}</style>
<h1>Which response is better?</h1><p>Each prompt has two responses in random order; pick the better one, or tie, then
save the CSV.</p>
{''.join(cards)}
{save_csv_button(rows, columns, FILL_PREFERENCES)}
"""
