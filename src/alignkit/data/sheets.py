"""Ranking sheets for people: blinded, shuffled responses out (CSV + a self-contained HTML page),
orders back in as ranked preference data.

sheet.csv   item, prompt, A, B, C, ..., order       (a rater fills `order`, e.g. "B>A>C" or "BAC")
sheet.html  the same rows, readable, with an order box per item and a button that saves the CSV
key.json    for each item, which original response each letter shows (the blinding key)
"""

from __future__ import annotations

import csv
import html
import json
import random
import re
import string
from pathlib import Path
from typing import Any

from alignkit.data.records import read_records
from alignkit.errors import DataError

LETTERS = string.ascii_uppercase
# The page's script: copy each item's order box into its row before the CSV is saved.
FILL_ORDERS = "document.querySelectorAll('section').forEach((s, i) => rows[i].order = s.querySelector('input').value.trim());"


def export_ranking_sheet(samples_path: str | Path, out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write sheet.csv, sheet.html and key.json for rows {"prompt": str, "responses": [str, ...]}."""
    rng = random.Random(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, key = [], {}
    for n, record in enumerate(read_records(samples_path)):
        prompt, responses = record.row.get("prompt"), record.row.get("responses")
        if not isinstance(prompt, str) or not isinstance(responses, list) or len(responses) < 2 \
                or not all(isinstance(r, str) for r in responses):
            raise DataError(f"{record.where}: expected {{\"prompt\": str, \"responses\": [at least 2 strings]}}")
        order = list(range(len(responses)))
        rng.shuffle(order)
        item = f"item-{n + 1:04d}"
        key[item] = {"shown": order, "source": record.where,
                     "extra": {k: v for k, v in record.row.items() if k not in ("prompt", "responses")}}
        rows.append({"item": item, "prompt": prompt, **{LETTERS[i]: responses[j] for i, j in enumerate(order)}, "order": ""})
    width = max(len(k["shown"]) for k in key.values())
    columns = ["item", "prompt", *LETTERS[:width], "order"]
    paths = {"csv": out / "sheet.csv", "html": out / "sheet.html", "key": out / "key.json"}
    with paths["csv"].open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    paths["key"].write_text(json.dumps({"samples": str(samples_path), "items": key}, indent=1) + "\n")
    paths["html"].write_text(_html(rows, columns), encoding="utf-8")
    return paths


def _html(rows: list[dict[str, str]], columns: list[str]) -> str:
    cards = []
    for r in rows:
        options = "".join(f"<li><b>{c}</b> <pre>{html.escape(r[c])}</pre></li>" for c in columns[2:-1] if r.get(c))
        cards.append(f"<section data-item='{r['item']}'><h3>{r['item']}</h3><p class='prompt'>{html.escape(r['prompt'])}</p>"
                     f"<ol type='A'>{options}</ol><label>Best to worst (e.g. B&gt;A&gt;C): "
                     f"<input name='order' size='12'></label></section>")
    return f"""<!doctype html><meta charset="utf-8"><title>alignkit ranking sheet</title>
<style>body{{font-family:sans-serif;max-width:52rem;margin:2rem auto}}section{{border:1px solid #ccc;padding:.5rem 1rem;
margin:1rem 0;border-radius:6px}}.prompt{{font-weight:bold}}pre{{white-space:pre-wrap;display:inline}}ol{{list-style:none;padding:0}}
li{{margin:.4rem 0}}</style>
<h1>Rank the responses</h1><p>For each prompt, order the responses from best to worst by their letters, then save the CSV.
The responses are shuffled and unlabelled.</p>
{''.join(cards)}
{save_csv_button(rows, columns, FILL_ORDERS)}
"""


def save_csv_button(rows: list[dict[str, str]], columns: list[str], fill_js: str) -> str:
    """A button (and its script) that saves the sheet as sheet.csv from the page itself: `fill_js`
    copies the rater's inputs into `rows` first. Shared by the ranking and side-by-side sheets."""
    data = json.dumps(rows).replace("</", "<\\/")
    return f"""<button id="save">Save filled CSV</button>
<script>
const rows = {data};
const cols = {json.dumps(columns)};
document.getElementById('save').onclick = () => {{
  {fill_js}
  const q = v => '"' + String(v ?? '').replace(/"/g, '""') + '"';
  const text = [cols.join(',')].concat(rows.map(r => cols.map(c => q(r[c])).join(','))).join('\\n') + '\\n';
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([text], {{type: 'text/csv'}}));
  a.download = 'sheet.csv'; a.click();
}};
</script>"""


def parse_order(text: str, letters: str, where: str) -> list[str]:
    """'B>A>C', 'B A C', 'BAC' -> ['B', 'A', 'C']; every shown letter exactly once, else DataError."""
    compact = re.sub(r"[\s>,;]+", "", text.upper())
    if not compact:
        raise DataError(f"{where}: no order given (expected the letters {', '.join(letters)} best first, e.g. "
                        f"{'>'.join(letters)})")
    unknown = sorted(set(compact) - set(letters))
    if unknown:
        raise DataError(f"{where}: order '{text}' names {', '.join(unknown)}, but only {', '.join(letters)} are shown")
    repeated = sorted({c for c in compact if compact.count(c) > 1})
    if repeated:
        raise DataError(f"{where}: order '{text}' ranks {', '.join(repeated)} more than once")
    missing = [c for c in letters if c not in compact]
    if missing:
        raise DataError(f"{where}: order '{text}' is incomplete: {', '.join(missing)} not ranked")
    return list(compact)


def import_ranking_sheet(sheet_csv: str | Path, key_json: str | Path) -> list[dict[str, Any]]:
    """Ranked rows {"prompt", "responses" best first, ...extra fields} from a filled sheet and its key."""
    key = json.loads(Path(key_json).read_text())["items"]
    out = []
    with open(sheet_csv, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        for line, row in enumerate(reader, start=2):
            where = f"{sheet_csv}, line {line}"
            item = row.get("item", "")
            if item not in key:
                raise DataError(f"{where}: item '{item}' is not in {key_json} (a sheet and key from different exports?)")
            shown = key[item]["shown"]
            letters = LETTERS[:len(shown)]
            order = parse_order(row.get("order") or "", letters, f"{where} ({item})")
            responses_by_letter = {c: row[c] for c in letters}
            out.append({"prompt": row["prompt"], "responses": [responses_by_letter[c] for c in order],
                        **key[item]["extra"]})
    missing = sorted(set(key) - {r_item for r_item in _items(sheet_csv)})
    if missing:
        raise DataError(f"{sheet_csv}: {len(missing)} item(s) of the key are missing from the sheet, e.g. {missing[0]}")
    return out


def _items(sheet_csv: str | Path) -> list[str]:
    with open(sheet_csv, newline="", encoding="utf-8") as fh:
        return [row.get("item", "") for row in csv.DictReader(fh)]
