"""Preference data: rankings of k give k(k-1)/2 ordered pairs; ties, bad and contradictory rows."""

from __future__ import annotations

import pytest

from alignkit.data.preferences import rankings_to_pairs, to_ranking
from alignkit.data.records import Record
from alignkit.errors import DataError


def ranking(row, aspect="mean"):
    return to_ranking(Record(row, "prefs.jsonl, line 5"), aspect)


@pytest.mark.parametrize("k, n_pairs", [(2, 1), (3, 3), (4, 6)])
def test_rankings_of_k_give_k_choose_2_pairs_in_order(k, n_pairs):
    responses = [f"r{i}" for i in range(k)]  # best first
    pairs = rankings_to_pairs(ranking({"prompt": "q", "responses": responses}))
    assert len(pairs) == n_pairs
    assert all(responses.index(p.chosen) < responses.index(p.rejected) for p in pairs)
    assert {(p.chosen, p.rejected) for p in pairs} == {(responses[i], responses[j]) for i in range(k) for j in range(i + 1, k)}


def test_adjacent_pairs_only():
    pairs = rankings_to_pairs(ranking({"prompt": "q", "responses": ["a", "b", "c", "d"]}), adjacent_only=True)
    assert [(p.chosen, p.rejected) for p in pairs] == [("a", "b"), ("b", "c"), ("c", "d")]


def test_explicit_ranking_and_scores_with_ties():
    r = ranking({"prompt": "q", "responses": ["a", "b", "c"], "ranking": [2, 0, 1]})
    assert {(p.chosen, p.rejected) for p in rankings_to_pairs(r)} == {("c", "a"), ("c", "b"), ("a", "b")}
    tied = ranking({"prompt": "q", "responses": ["a", "b", "c"], "scores": [5, 5, 1]})
    assert {(p.chosen, p.rejected) for p in rankings_to_pairs(tied)} == {("a", "c"), ("b", "c")}  # a = b: no pair
    rated = rankings_to_pairs(ranking({"prompt": "q", "responses": ["a", "b"], "ratings": [7, 4]}), rating_margin=True)
    assert rated[0].margin == 3.0


def test_pairwise_rows_plain_and_chat_forms():
    plain = rankings_to_pairs(ranking({"prompt": "q", "chosen": "good", "rejected": "bad", "source": "web"}))
    assert [(p.prompt, p.chosen, p.rejected, p.source) for p in plain] == [
        (({"role": "user", "content": "q"},), "good", "bad", "web")]
    convo = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "q"}]
    hh = ranking({"chosen": convo + [{"role": "assistant", "content": "good"}],
                  "rejected": convo + [{"role": "assistant", "content": "bad"}]})
    assert hh.prompt == tuple(convo) and hh.responses == ("good", "bad")


@pytest.mark.parametrize("row, message", [
    ({"prompt": "q", "responses": ["only one"]}, "field 'responses' must be a list of at least 2 responses"),
    ({"prompt": "q", "responses": ["a", "a"]}, "holds the same response twice"),
    ({"prompt": "q", "responses": ["a", "b", "c"], "ranking": [0, 0, 1]}, "field 'ranking' must list each response index 0..2 once"),
    ({"prompt": "q", "responses": ["a", "b"], "ranking": [0, 1], "scores": [1, 2]}, "fields 'ranking' and 'scores' contradict each other"),
    ({"prompt": "q", "responses": ["a", "b"], "scores": [1]}, "field 'scores' must hold one number per response (2)"),
    ({"prompt": "q", "responses": ["a", "b"], "ratings": [1, "high"]}, "ratings[1] must be a finite number"),
    ({"prompt": "q", "chosen": "x"}, "missing field 'rejected'"),
    ({"prompt": "q", "chosen": "x", "rejected": "x"}, "chosen and rejected are the same response"),
    ({"chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "x"}],
      "rejected": [{"role": "user", "content": "b"}, {"role": "assistant", "content": "y"}]}, "differ before their last turn"),
    ({"text": "q"}, "cannot tell the format from keys ['text']"),
    ({"instruction": "q", "completions": [{"response": "a", "annotations": {"honesty": {"Rating": "3"}}},
                                          {"response": "b", "annotations": {"honesty": {"Rating": "5"}}}]},
     "completions[0] has no rating for aspect 'helpfulness' (has honesty"),
])
def test_bad_preference_rows_name_the_row(row, message):
    with pytest.raises(DataError) as err:
        ranking(row, "helpfulness" if "completions" in row else "mean")
    assert str(err.value).startswith("prefs.jsonl, line 5: ") and message in str(err.value)


def test_world_rankings_parse():
    """The demo world's ranked data is in this format: 4 responses best first -> 6 pairs."""

    from alignkit.config import WorldConfig
    from alignkit.world.datasets import ranking_rows
    from alignkit.world.generate import sample_items

    rows = ranking_rows(sample_items("train", 20, seed=0), WorldConfig())
    pairs = [p for i, row in enumerate(rows) for p in rankings_to_pairs(to_ranking(Record(row, f"row {i}")))]
    assert len(pairs) == 6 * len(rows)


def test_reward_data_splits_by_ranking_and_ends_with_eos(tmp_path, tokenizer):
    import json

    from alignkit.data.reward import build_reward_data

    rows = [{"prompt": f"question {i}", "responses": [f"best {i}", f"middle {i}", f"worst {i}"]} for i in range(20)]
    rows.append(rows[0])  # an exact duplicate ranking
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train, held, report = build_reward_data(str(path), "", 0.25, tokenizer, 64, seed=0)
    assert (len(train), len(held)) == (15 * 3, 5 * 3)  # 3 pairs per ranking of 3
    assert report.as_dict()["train"]["dropped"] == {"exact duplicate": 1}
    prompts = lambda pairs: {tokenizer.decode(p.chosen_ids).split("<|assistant|>")[0] for p in pairs}  # noqa: E731
    assert not prompts(train) & prompts(held)  # a ranking's pairs never straddle the split
    assert all(p.chosen_ids[-1] == p.rejected_ids[-1] == tokenizer.eos_token_id for p in train)


def test_long_prompt_is_cut_from_the_left_and_long_response_dropped(tokenizer):
    from alignkit.data.reward import conversation_ids

    prompt = ({"role": "user", "content": "apple pear " * 30},)
    ids = conversation_ids(tokenizer, prompt, "fig", max_length=16)
    assert len(ids) == 16 and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids).endswith("<|assistant|>\nfig<|eos|>")  # the prompt's start was cut, not the end
    assert conversation_ids(tokenizer, ({"role": "user", "content": "q"},), "plum " * 40, max_length=16) is None


def test_response_start_marks_the_first_response_token(tokenizer):
    """DPO scores only the response: `start` indexes its first token, also after a left cut."""
    from alignkit.data.reward import conversation_with_start

    prompt = ({"role": "user", "content": "apple pear"},)
    ids, start, cut = conversation_with_start(tokenizer, prompt, "fig", max_length=64)
    assert cut == 0
    assert tokenizer.decode(ids[start:]) == "fig<|eos|>"
    long_prompt = ({"role": "user", "content": "apple pear " * 30},)
    ids, start, cut = conversation_with_start(tokenizer, long_prompt, "fig", max_length=16)
    assert cut > 0 and start >= 1
    assert len(ids) == 16 and tokenizer.decode(ids[start:]) == "fig<|eos|>"


def test_split_keeps_every_prompt_on_one_side_when_rows_repeat_it():
    """HH-style data: one pair per row, so a prompt with three compared pairs fills three rows. 10
    prompts x 3 rows with eval_fraction 0.3 must hold out exactly 3 whole prompts (9 rows); splitting
    rows instead put 8 of the 10 prompts on both sides."""
    from alignkit.data.reward import split_rankings

    rows = [Record({"prompt": f"question {i}", "chosen": f"good {i}.{j}", "rejected": f"bad {i}.{j}"}, f"row {3 * i + j}")
            for i in range(10) for j in range(3)]
    rankings = [to_ranking(r) for r in rows]
    for seed in range(5):
        train, held = split_rankings(rankings, 0.3, seed)
        prompts = lambda rs: {r.prompt[0]["content"] for r in rs}  # noqa: E731
        assert not prompts(train) & prompts(held)
        assert (len(prompts(held)), len(held), len(train)) == (3, 9, 21)
        assert sorted(r.where for r in train + held) == sorted(r.where for r in rankings)  # nothing lost


def test_split_of_unique_prompts_is_the_seeded_shuffle_of_rankings():
    """With one ranking per prompt the split holds out the first round(f * n) of a seeded shuffle of
    the rankings, as before grouping: the demo's data sets split exactly as they did."""
    import random

    from alignkit.data.reward import split_rankings

    rankings = [to_ranking(Record({"prompt": f"q {i}", "responses": ["a", "b"]}, f"row {i}")) for i in range(40)]
    order = list(range(40))
    random.Random(7).shuffle(order)
    _, held = split_rankings(rankings, 0.1, 7)
    assert [r.where for r in held] == [f"row {i}" for i in sorted(order[:4])]


def test_raw_hh_transcripts_are_read_as_chats():
    """Anthropic HH rows: two transcripts agreeing up to the last answer; the prompt is the shared
    turns, and a prompt string in HH form ending with "Assistant:" is the conversation before it."""
    row = {"chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how are you?\n\nAssistant: well, thanks",
           "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how are you?\n\nAssistant: go away"}
    r = ranking(row)
    assert r.prompt == ({"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                        {"role": "user", "content": "how are you?"})
    assert r.responses == ("well, thanks", "go away")
    p = ranking({"prompt": "\n\nHuman: hi\n\nAssistant:", "chosen": "hello", "rejected": "no"})
    assert p.prompt == ({"role": "user", "content": "hi"},)


ULTRA = {"instruction": "Name a fruit.", "completions": [
    {"response": "pear", "overall_score": 8.0, "fine-grained_score": 4.5,
     "annotations": {"helpfulness": {"Rating": "5"}, "honesty": {"Rating": "4"}, "truthfulness": {"Rating": "N/A"}}},
    {"response": "stone", "overall_score": 3.0, "fine-grained_score": 2.0,
     "annotations": {"helpfulness": {"Rating": "2"}, "honesty": {"Rating": "5"}, "truthfulness": {"Rating": "3"}}},
    {"response": "apple", "overall_score": 6.0, "fine-grained_score": "N/A",
     "annotations": {"helpfulness": {"Rating": "4"}, "honesty": {"Rating": "N/A"}, "truthfulness": {"Rating": "N/A"}}},
]}


@pytest.mark.parametrize("aspect, scores", [
    ("mean", (4.5, 10 / 3, 4.0)),            # each response's mean over the aspects it has ("N/A" left out)
    ("helpfulness", (5.0, 2.0, 4.0)),
    ("honesty", (4.0, 5.0)),                  # apple has no honesty rating: left out
    ("overall_score", (8.0, 3.0, 6.0)),
    ("fine-grained_score", (4.5, 2.0)),
])
def test_ultrafeedback_rows_rank_by_an_aspect_or_the_mean(aspect, scores):
    r = ranking(ULTRA, aspect)
    assert r.prompt == ({"role": "user", "content": "Name a fruit."},) and r.rated
    assert r.scores == pytest.approx(scores)
    assert r.responses == ("pear", "stone", "apple")[:len(scores)]


def test_an_all_tied_ranking_is_dropped_and_counted(tmp_path, tokenizer):
    """Rows with no preference in them (every rating equal, or one rated response) are dropped and
    counted by reason in the data report; the others are kept."""
    from alignkit.data.reward import build_reward_data
    from conftest import write_jsonl

    rows = [{"prompt": "q1", "responses": ["a", "b"], "ratings": [3, 3]},
            {"prompt": "q2", "responses": ["a", "b"], "ratings": [3, 4]},
            {"instruction": "q3", "completions": [{"response": "x", "annotations": {"helpfulness": {"Rating": "4"}}},
                                                  {"response": "y", "annotations": {"helpfulness": {"Rating": "4"}}}]},
            {"instruction": "q4", "completions": [{"response": "x", "annotations": {"helpfulness": {"Rating": "4"}}},
                                                  {"response": "y", "annotations": {"helpfulness": {"Rating": "N/A"}}}]}]
    path = write_jsonl(tmp_path / "prefs.jsonl", rows)
    train, _, report = build_reward_data(str(path), str(path), 0.0, tokenizer, 64, 0)
    d = report.as_dict()
    assert len(train) == 1 and d["train"]["rows_read"] == 4
    assert d["train"]["dropped"] == {"all responses tied (ratings)": 1, "all responses tied (mean)": 1,
                                     "fewer than 2 rated responses": 1}
    assert d["train"]["dropped_examples"]["all responses tied (ratings)"] == [f"{path}, line 1"]
