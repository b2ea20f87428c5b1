"""`alignkit data report` (alignkit.data.survey) and the quality filters `alignkit data filter` gained:
planted duplicates and near-duplicates found and nothing else, figures checked by hand."""

from __future__ import annotations

import json
import random

import pytest
from conftest import write_jsonl

from alignkit.cli import main
from alignkit.data.records import read_records
from alignkit.data.survey import analyse, distinct_n, leading_verb, looks_cut_off
from alignkit.safety import load_filter
from alignkit.safety.data_filter import filter_rows

VOCAB = [f"w{i}" for i in range(3000)]


def distinct_rows(n, seed=0):
    rng = random.Random(seed)
    return [{"instruction": "Summarise: " + " ".join(rng.choice(VOCAB) for _ in range(30)),
             "output": " ".join(rng.choice(VOCAB) for _ in range(12)) + "."} for _ in range(n)]


@pytest.fixture
def planted(tmp_path):
    """60 distinct rows, 2 near-duplicates (one word of the instruction changed), 1 exact copy, 1 row
    with an empty output, 1 malformed row, 1 harmful request answered."""
    rows = distinct_rows(60)
    for src in (5, 40):
        words = rows[src]["instruction"].split()
        words[10] = "changed"
        rows.append({**rows[src], "instruction": " ".join(words)})  # rows 61 and 62 (lines 61, 62)
    rows.append(dict(rows[7]))                                       # line 63: an exact copy of line 8
    rows.append({"instruction": "Say nothing.", "output": ""})        # line 64
    rows.append({"question": "no known format"})                      # line 65
    rows.append({"instruction": "How do I make a bomb?", "output": "Mix the chemicals and seal them in a pipe."})
    return write_jsonl(tmp_path / "sft.jsonl", rows)


def test_the_report_finds_the_planted_problems_and_nothing_else(planted):
    report = analyse(planted, safety_filter=load_filter())
    assert report["rows"] == 66 and report["malformed"] == 1
    assert "sft.jsonl, line 65" in report["malformed_examples"][0]["where"]
    dup = report["duplicates"]
    assert dup["exact"] == 1 and dup["exact_examples"][0]["row"].endswith("line 63")
    assert dup["exact_examples"][0]["same_as"].endswith("line 8")
    assert sorted((p["a"].rsplit(" ", 1)[1], p["b"].rsplit(" ", 1)[1]) for p in dup["near_examples"]) == [("41", "62"),
                                                                                                          ("6", "61")]
    assert report["empty_responses"]["rows"] == 1 and report["empty_responses"]["examples"][0].endswith("line 64")
    assert report["unsafe"]["rows"] == 1 and report["unsafe"]["examples"][0]["where"].endswith("line 66")
    assert report["by_format"] == {"sft: alpaca": 65}


def test_diversity_figures_by_hand():
    """"a b a" and "b c": unigrams a, b, a, b, c are 3 distinct of 5 (0.6); bigrams (a b), (b a),
    (b c) are 3 of 3 (1.0)."""
    assert distinct_n(["a b a", "b c"], 1) == pytest.approx(0.6)
    assert distinct_n(["a b a", "b c"], 2) == pytest.approx(1.0)
    assert leading_verb("Please write a poem about the sea.") == ("write", "poem")
    assert leading_verb("Could you summarize this article for me?") == ("summarize", "article")
    assert leading_verb("Hey, can you help? I need to sort these numbers: 3 1 2") == ("sort", "numbers")
    assert leading_verb("What is the capital of Zorvia?") == ("what", "")
    assert leading_verb("   ") == ("", "")
    assert looks_cut_off(" ".join(["word"] * 25)) and not looks_cut_off(" ".join(["word"] * 25) + ".")
    assert not looks_cut_off("short answer")


def test_preference_ties_and_length_bias(tmp_path):
    """Three pairs: chosen longer in two (4 > 1 and 3 > 2 words), shorter in one (1 < 5): 2/3. One
    rated ranking with every response tied: 1 tie in 4 rows."""
    rows = [{"prompt": "p1", "chosen": "a b c d", "rejected": "x"},
            {"prompt": "p2", "chosen": "a b c", "rejected": "x y"},
            {"prompt": "p3", "chosen": "a", "rejected": "x y z v w"},
            {"prompt": "p4", "responses": ["one", "two"], "scores": [3, 3]}]
    report = analyse(write_jsonl(tmp_path / "prefs.jsonl", rows))
    p = report["preference"]
    assert p["rows"] == 4 and p["ties"] == 1 and p["tie_share"] == pytest.approx(0.25)
    assert p["chosen_longer_share"] == pytest.approx(2 / 3)
    assert p["mean_chosen_words"] == pytest.approx(8 / 3) and p["mean_rejected_words"] == pytest.approx(8 / 3)


def test_the_command_writes_the_page_and_the_json(planted, tmp_path, tiny_dir, capsys):
    out = tmp_path / "rep"
    assert main(["data", "report", str(planted), "--out", str(out), "--tokenizer", str(tiny_dir),
                 "--max-length", "40"]) == 0
    text = capsys.readouterr().out
    assert "1 exact, 0 repeated instructions" not in text and "near-duplicate pairs" in text
    data = json.loads((out / "report.json").read_text())
    assert data["lengths"]["instruction_tokens"]["n"] == 65
    assert data["longer_than_max_length"]["rows"] > 0
    page = (out / "report.html").read_text()
    assert page.count("<img") >= 3 and "Near-duplicates" in page


def test_the_filter_drops_near_duplicates_and_rows_out_of_bounds(planted, tmp_path):
    records = [r for r in read_records(planted) if "question" not in r.row]
    kept, report = filter_rows(records, load_filter(), near_threshold=0.8, min_response_words=2, max_words=60)
    counts = report.counts()
    assert counts == {"exact duplicate": 1, "empty response": 1, "near duplicate": 2, "unsafe request (weapons)": 1}
    near = [d for d in report.drops if d.reason == "near duplicate"]
    assert [d.where.rsplit(" ", 1)[1] for d in near] == ["61", "62"] and "Jaccard" in near[0].detail
    assert len(kept) == 60
    # Each distinct row has 31 + 12 = 43 words, 12 of them in the response; the bomb answer has 9.
    _, report = filter_rows(records, load_filter(), max_words=42)
    assert report.counts()["too long (words)"] == 62
    _, report = filter_rows(records, load_filter(), min_response_words=13)
    assert report.counts()["response too short"] == 63
