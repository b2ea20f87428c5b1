"""Collecting rankings: sample k responses, export a blinded sheet, fill it (the world's annotator
or a person), import the orders as ranked data; bad sheets fail by row."""

from __future__ import annotations

import csv
import json

import pytest

from alignkit.cli import main
from alignkit.data.sheets import export_ranking_sheet, import_ranking_sheet, parse_order
from alignkit.errors import DataError


def test_sample_export_annotate_import_end_to_end(tiny_dir, tmp_path):
    from alignkit.config import WorldConfig
    from alignkit.world.datasets import item_from_dict, write_world_data
    from alignkit.world.oracle import grade

    world = write_world_data(tmp_path / "w", WorldConfig(sft_examples=10, ranking_prompts=10, rl_prompts=12, eval_prompts=10))
    samples, sheet = tmp_path / "samples.jsonl", tmp_path / "sheet"
    assert main(["data", "sample", str(tiny_dir), str(world["rl_prompts"]), str(samples), "--k", "3",
                 "--max-new-tokens", "6", "--limit", "8"]) == 0
    sampled = [json.loads(line) for line in samples.read_text().splitlines()]
    assert sampled and all(2 <= len(r["responses"]) <= 3 and len(set(r["responses"])) == len(r["responses"]) for r in sampled)
    assert main(["data", "export-ranking", str(samples), str(sheet)]) == 0
    assert (sheet / "sheet.html").read_text().count("<section") == len(sampled)
    assert main(["world", "annotate", str(sheet / "sheet.csv"), str(sheet / "key.json")]) == 0
    assert main(["data", "import-ranking", str(sheet / "sheet.csv"), str(sheet / "key.json"), str(tmp_path / "ranked.jsonl")]) == 0
    ranked = [json.loads(line) for line in (tmp_path / "ranked.jsonl").read_text().splitlines()]
    for row, original in zip(ranked, sampled):
        assert sorted(row["responses"]) == sorted(original["responses"])  # unblinded back to the same responses
        grades = [grade(item_from_dict(row), r) for r in row["responses"]]
        assert grades == sorted(grades, reverse=True)  # best first, by the annotator (no noise)
    from alignkit.data.preferences import to_ranking
    from alignkit.data.records import read_records

    assert all(to_ranking(r) for r in read_records(tmp_path / "ranked.jsonl"))  # readable by `alignkit rm`


def test_sheet_is_shuffled_and_blinded(tmp_path):
    rows = [{"prompt": f"q{i}", "responses": ["first", "second", "third"]} for i in range(30)]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    paths = export_ranking_sheet(tmp_path / "s.jsonl", tmp_path / "out")
    with open(paths["csv"], newline="") as fh:
        shown = [r["A"] for r in csv.DictReader(fh)]
    assert len(set(shown)) == 3  # the first letter does not always show the first response
    assert "first" not in open(paths["csv"]).readline()  # no hint of the original order in the header


@pytest.mark.parametrize("order, message", [
    ("", "no order given"),
    ("A>B", "is incomplete: C not ranked"),
    ("A>A>B", "ranks A more than once"),
    ("A>B>D", "names D, but only A, B, C are shown"),
])
def test_bad_orders_are_refused_by_row(order, message):
    with pytest.raises(DataError) as err:
        parse_order(order, "ABC", "sheet.csv, line 4 (item-0003)")
    assert str(err.value).startswith("sheet.csv, line 4 (item-0003): ") and message in str(err.value)
    assert parse_order("b > c, a", "ABC", "x") == ["B", "C", "A"]


def test_import_names_a_row_missing_its_order(tmp_path):
    (tmp_path / "s.jsonl").write_text(json.dumps({"prompt": "q", "responses": ["x", "y"]}) + "\n")
    paths = export_ranking_sheet(tmp_path / "s.jsonl", tmp_path / "out")
    with pytest.raises(DataError, match=r"sheet.csv, line 2 \(item-0001\): no order given"):
        import_ranking_sheet(paths["csv"], paths["key"])
