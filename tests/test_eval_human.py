"""Human evaluation round trip: export a blinded sheet, fill it in as a rater would (from the key),
import it: the win rate is exact."""

from __future__ import annotations

import csv
import json

import pytest

from alignkit.cli import main
from alignkit.errors import DataError
from alignkit.eval.human import export_human_sheet, import_human_sheet


@pytest.fixture()
def responses(tmp_path):
    path = tmp_path / "responses.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"}], "sft": f"s{i}",
                                        "dpo": f"d{i}"}) + "\n" for i in range(10)))
    return path


def fill(sheet, key, prefer):
    """A rater who prefers DPO on q0-q5, SFT on q6-q7, and calls q8-q9 a tie: 6 wins, 2 losses, 2 ties."""
    items = json.loads(key.read_text())["items"]
    with open(sheet, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        i = int(r["prompt"][1:])
        winner = prefer(i)
        r["preference"] = "tie" if winner is None else next(k for k in "AB" if items[r["item"]][k] == winner)
    with open(sheet, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_round_trip_gives_the_exact_win_rate(responses, tmp_path, capsys):
    assert main(["eval", "export-human", str(responses), str(tmp_path / "h"), "--models", "dpo,sft"]) == 0
    sheet, key = tmp_path / "h" / "sheet.csv", tmp_path / "h" / "key.json"
    text = sheet.read_text()
    assert "dpo" not in text and "sft" not in text  # blinded
    shown_first = [v["A"] for v in json.loads(key.read_text())["items"].values()]
    assert {"dpo", "sft"} == set(shown_first)  # both orders occur
    fill(sheet, key, lambda i: "dpo" if i < 6 else "sft" if i < 8 else None)
    r = import_human_sheet(sheet, key)
    assert (r["model"], r["wins"], r["losses"], r["ties"]) == ("dpo", 6, 2, 2) and r["win_rate"] == 0.75
    capsys.readouterr()
    assert main(["eval", "import-human", str(sheet), str(key)]) == 0
    assert "dpo vs sft: 6 wins, 2 losses, 2 ties; win rate 75.0%" in capsys.readouterr().out
    assert (tmp_path / "h" / "sheet.html").read_text().count("type='radio'") == 30


def test_bad_ratings_are_named(responses, tmp_path):
    paths = export_human_sheet(responses, "dpo", "sft", tmp_path / "h")
    with pytest.raises(DataError, match="line 2 .*preference '' is not A, B or tie"):
        import_human_sheet(paths["csv"], paths["key"])
    with pytest.raises(DataError, match="no response of model 'ppo'"):
        export_human_sheet(responses, "dpo", "ppo", tmp_path / "x")
