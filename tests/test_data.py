"""Data: formats, response-only labels, EOS, truncation, dedupe, readers, and bad-input messages."""

from __future__ import annotations

import json

import pytest

from alignkit.config import DataConfig
from alignkit.data import (DEFAULT_CHAT_TEMPLATE, IGNORE_INDEX, Record, build_sft_data, read_records,
                           tokenize_sample, to_sample)
from alignkit.data.formats import Sample
from alignkit.errors import DataError
from alignkit.models.tiny import train_tokenizer

from conftest import task_rows, write_jsonl


@pytest.fixture(scope="module")
def char_tok():
    """A byte-level tokenizer with no merges (vocab = 6 specials + 256 bytes): one token per character,
    so label arrays can be written out by hand."""
    return train_tokenizer(["hi yo"], vocab_size=262)


def ids(tok, *pieces):
    """Token ids of special tokens and single characters ('\\n' is the byte-level 'Ċ')."""
    return [tok.convert_tokens_to_ids("Ċ" if p == "\n" else p) for p in pieces]


def test_exact_label_array_single_turn(char_tok):
    """user "hi", assistant "yo" renders as  <|bos|><|user|>\\nhi\\n<|assistant|>\\nyo<|eos|>
    = 11 tokens; only the response "y", "o" and the EOS after it carry labels:
        labels = [-100] * 8 + [y, o, <|eos|>]
    """
    s = Sample(({"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}), "row 0")
    ex = tokenize_sample(char_tok, s, max_length=64)
    expected_ids = ids(char_tok, "<|bos|>", "<|user|>", "\n", "h", "i", "\n", "<|assistant|>", "\n", "y", "o", "<|eos|>")
    assert ex.input_ids == expected_ids
    assert ex.labels == [IGNORE_INDEX] * 8 + expected_ids[8:]


def test_all_assistant_turns_labelled_in_multi_turn_chat(char_tok):
    """Two assistant turns: both responses and both EOS tokens are labelled, user turns are not."""
    s = Sample(({"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                {"role": "user", "content": "i"}, {"role": "assistant", "content": "oh"}), "row 0")
    ex = tokenize_sample(char_tok, s, max_length=64)
    labelled = [t for t, label in zip(ex.input_ids, ex.labels) if label != IGNORE_INDEX]
    assert labelled == ids(char_tok, "y", "o", "<|eos|>", "o", "h", "<|eos|>")


def test_default_template_when_tokenizer_has_none():
    """A tokenizer without a chat template gets the documented default, and EOS ends the response."""
    tok = train_tokenizer(["hello world"], vocab_size=300)
    tok.chat_template = None
    from alignkit.data import ensure_chat_template, render

    assert ensure_chat_template(tok)
    assert tok.chat_template == DEFAULT_CHAT_TEMPLATE
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    assert render(tok, msgs) == "<|bos|>### User:\nHi\n\n### Assistant:\nYo<|eos|>"
    ex = tokenize_sample(tok, Sample(tuple(msgs), "r"), 64)
    assert ex.input_ids[-1] == tok.eos_token_id and ex.labels[-1] == tok.eos_token_id
    assert tok.decode([t for t, l in zip(ex.input_ids, ex.labels) if l != IGNORE_INDEX]) == "Yo<|eos|>"


def test_plain_prompt_completion_appends_and_trains_eos(char_tok):
    s = to_sample(Record({"prompt": "hi ", "completion": "yo"}, "r"))
    assert not s.templated
    ex = tokenize_sample(char_tok, s, 64)
    assert ex.input_ids == ids(char_tok, "h", "i", "Ġ", "y", "o", "<|eos|>")
    assert ex.labels == [IGNORE_INDEX] * 3 + ids(char_tok, "y", "o", "<|eos|>")


def test_truncation_right_keeps_prefix_and_drop_removes(char_tok):
    s = Sample(({"role": "user", "content": "hi"}, {"role": "assistant", "content": "yoyoyo"}), "r")
    ex = tokenize_sample(char_tok, s, max_length=10, truncation="right")
    assert len(ex.input_ids) == 10 and ex.truncated
    assert ex.labels[-2:] == ids(char_tok, "y", "o")  # the EOS was cut off with the tail
    assert tokenize_sample(char_tok, s, max_length=10, truncation="drop") == "longer than data.max_length"
    assert tokenize_sample(char_tok, s, max_length=7) == "no response tokens within data.max_length"


def test_formats_normalise_to_messages():
    alpaca = to_sample(Record({"instruction": "Add", "input": "1 2", "output": "3", "system": "Be brief"}, "r"))
    assert alpaca.messages == ({"role": "system", "content": "Be brief"}, {"role": "user", "content": "Add\n\n1 2"},
                               {"role": "assistant", "content": "3"})
    share = to_sample(Record({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}, "r"))
    assert share.messages == ({"role": "user", "content": "q"}, {"role": "assistant", "content": "a"})
    conv_pc = to_sample(Record({"prompt": [{"role": "user", "content": "q"}],
                                "completion": [{"role": "assistant", "content": "a"}]}, "r"))
    assert conv_pc.templated and conv_pc.messages[1]["content"] == "a"


@pytest.mark.parametrize("row, message", [
    ({"instruction": "x"}, "cannot tell the format from keys ['instruction']"),
    ({"instruction": "x", "output": 3}, "field 'output' must be a string, got int"),
    ({"messages": [{"role": "user", "content": "q"}]}, "field 'messages' has no assistant turn to train on"),
    ({"messages": [{"role": "bot", "content": "q"}]}, "messages[0]: unknown role 'bot'"),
    ({"messages": [{"role": "user"}]}, "messages[0]: missing field 'content'"),
    ({"messages": "hello"}, "field 'messages' must be a non-empty list of messages"),
    ({"prompt": "q", "completion": None}, "missing field 'completion'"),
])
def test_bad_rows_name_the_row_and_field(row, message):
    with pytest.raises(DataError) as err:
        to_sample(Record(row, "data.jsonl, line 7"))
    assert str(err.value).startswith("data.jsonl, line 7: ")
    assert message in str(err.value)


def test_alpaca_format_forced_names_missing_field():
    with pytest.raises(DataError, match=r"line 3: missing field 'output'"):
        to_sample(Record({"instruction": "x", "response": "y"}, "f.jsonl, line 3"), "alpaca")


def test_non_json_line_names_the_line(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "completion": "b"}, "{not json"])
    with pytest.raises(DataError, match=rf"{path}, line 2: not valid JSON"):
        read_records(path)


def test_empty_file_and_missing_file(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(DataError, match="holds no rows"):
        read_records(tmp_path / "e.jsonl")
    (tmp_path / "e.json").write_text("")
    with pytest.raises(DataError, match="the file is empty"):
        read_records(tmp_path / "e.json")
    with pytest.raises(DataError, match="no such file"):
        read_records(tmp_path / "missing.jsonl")
    (tmp_path / "d.csv").write_text("a,b\n")
    with pytest.raises(DataError, match=r"unknown data file type '.csv'"):
        read_records(tmp_path / "d.csv")


def test_json_row_that_is_not_an_object(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps([{"prompt": "a", "completion": "b"}, [1, 2]]))
    with pytest.raises(DataError, match=r"d.json, row 1: expected a JSON object, got list"):
        read_records(tmp_path / "d.json")


def test_readers_agree_across_file_types(tmp_path):
    from datasets import Dataset, DatasetDict

    rows = task_rows()[:5]
    write_jsonl(tmp_path / "d.jsonl", rows)
    (tmp_path / "d.json").write_text(json.dumps(rows))
    Dataset.from_list(rows).to_parquet(str(tmp_path / "d.parquet"))
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "saved"))
    for name in ("d.jsonl", "d.json", "d.parquet", "saved"):
        assert [r.row for r in read_records(tmp_path / name)] == rows, name
    assert read_records(tmp_path / "d.jsonl")[2].where == f"{tmp_path / 'd.jsonl'}, line 3"
    with pytest.raises(DataError, match="no split 'test' \\(has train\\)"):
        read_records(tmp_path / "saved", split="test")


def test_duplicates_and_empty_responses_are_dropped_and_counted(tmp_path, tokenizer):
    rows = task_rows()[:6]
    rows += [rows[0], rows[1], {"instruction": "Say nothing.", "output": "  "}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    data = build_sft_data(DataConfig(train_path=str(path), eval_fraction=0.0), tokenizer, seed=0)
    report = data.report.as_dict()["train"]
    assert report["rows_read"] == 9 and report["kept"] == 6 == len(data.train)
    assert report["dropped"] == {"exact duplicate": 2, "empty response": 1}
    assert report["dropped_examples"]["empty response"] == [f"{path}, line 9"]


def test_eval_split_and_eval_file_deduped_against_train(tmp_path, tokenizer):
    rows = task_rows()
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    data = build_sft_data(DataConfig(train_path=str(path), eval_fraction=0.25), tokenizer, seed=0)
    assert (len(data.train), len(data.eval)) == (90, 30)
    held = write_jsonl(tmp_path / "e.jsonl", rows[:3] + [{"instruction": "new", "output": "row"}])
    data = build_sft_data(DataConfig(train_path=str(path), eval_path=str(held)), tokenizer, seed=0)
    assert len(data.eval) == 1
    assert data.report.as_dict()["eval"]["dropped"] == {"exact duplicate": 3}


def test_keep_field_trains_only_on_the_rows_with_a_kept_value(tmp_path, tokenizer):
    """Rows 1-6 labelled kind a, b, c, a, b, a; keep_values [a, c] keeps rows 1, 3, 4, 6 (4 of 6) in
    file order, the 2 b rows dropped under one reason; the eval file is selected the same way, before
    deduping against training (its b row is dropped as b, not as a duplicate)."""
    rows = [{**r, "kind": k} for r, k in zip(task_rows()[:6], "abcaba")]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    held = write_jsonl(tmp_path / "e.jsonl", [rows[1], {"instruction": "new", "output": "row", "kind": "c"}])
    cfg = DataConfig(train_path=str(path), eval_path=str(held), keep_field="kind", keep_values=["a", "c"])
    data = build_sft_data(cfg, tokenizer, seed=0)
    report = data.report.as_dict()
    assert report["train"]["rows_read"] == 6 and report["train"]["kept"] == 4
    assert report["train"]["dropped"] == {"kind not in {a, c}": 2}
    assert report["train"]["dropped_examples"]["kind not in {a, c}"] == [f"{path}, line 2", f"{path}, line 5"]
    assert report["eval"]["dropped"] == {"kind not in {a, c}": 1} and len(data.eval) == 1
    every = build_sft_data(DataConfig(train_path=str(path), eval_fraction=0.0), tokenizer, seed=0)
    assert [e.input_ids for e in data.train] == [every.train[i].input_ids for i in (0, 2, 3, 5)]


def test_keep_field_errors_name_the_row_or_the_key(tmp_path, tokenizer):
    from alignkit.config import ConfigError, SFTConfig, load_config

    path = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "a", "output": "b", "kind": "a"},
                                              {"instruction": "c", "output": "d"}])
    with pytest.raises(DataError, match=r"d.jsonl, line 2: no 'kind' field; data.keep_field=kind"):
        build_sft_data(DataConfig(train_path=str(path), keep_field="kind", keep_values=["a"]), tokenizer, seed=0)
    with pytest.raises(ConfigError, match="data.keep_field=kind keeps no row; give data.keep_values"):
        load_config(SFTConfig, None, ["model.path=m", f"data.train_path={path}", "data.keep_field=kind"])
    with pytest.raises(ConfigError, match="data.keep_values is set but data.keep_field is empty"):
        load_config(SFTConfig, None, ["model.path=m", f"data.train_path={path}", "data.keep_values=[a]"])


# Real-world chat templates (written here in their published shapes) and where their spans fall.
CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\\nYou are helpful.<|im_end|>\\n' }}{% endif %}"
          "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
LLAMA3 = ("{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
          "'<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")
GEMMA = ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}"
         "{{ raise_exception('System role not supported') }}{% endif %}"
         "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
         "{{ '<start_of_turn>' + role + '\\n' + message['content'] + '<end_of_turn>\\n' }}{% endfor %}"
         "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}")


def _templated(template: str, eos: str, specials: list[str]):
    from tokenizers import AddedToken

    tok = train_tokenizer(["hi yo how are you"], vocab_size=300)
    tok.add_special_tokens({"additional_special_tokens": [AddedToken(s, special=True) for s in specials]})
    tok.chat_template = template
    tok.eos_token = eos
    return tok


def labelled_text(tok, sample) -> str:
    ex = tokenize_sample(tok, sample, 256)
    return tok.decode([t for t, lab in zip(ex.input_ids, ex.labels) if lab != IGNORE_INDEX])


CHAT = Sample(({"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}), "row 3")


@pytest.mark.parametrize("template, eos, specials, expected", [
    (CHATML, "<|im_end|>", ["<|im_start|>", "<|im_end|>"], "yo<|im_end|>\n"),
    (CHATML, "<|eos|>", ["<|im_start|>", "<|im_end|>"], "yo<|im_end|>\n<|eos|>"),  # base model: EOS appended
    (LLAMA3, "<|eot_id|>", ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], "yo<|eot_id|>"),
    (GEMMA, "<|eos|>", ["<start_of_turn>", "<end_of_turn>"], "yo<end_of_turn>\n<|eos|>"),
], ids=["chatml-instruct", "chatml-base", "llama3", "gemma"])
def test_real_templates_label_only_the_response_and_its_end(template, eos, specials, expected):
    assert labelled_text(_templated(template, eos, specials), CHAT) == expected


def test_template_that_rejects_a_conversation_names_the_row():
    tok = _templated(GEMMA, "<|eos|>", ["<start_of_turn>", "<end_of_turn>"])
    sample = Sample(({"role": "system", "content": "be brief"},) + CHAT.messages, "data.jsonl, line 4")
    with pytest.raises(DataError, match=r"data.jsonl, line 4: the chat template rejects this conversation \(System role not supported\)"):
        tokenize_sample(tok, sample, 64)


def test_assistant_first_turn_does_not_label_the_template_preamble():
    tok = _templated(CHATML, "<|im_end|>", ["<|im_start|>", "<|im_end|>"])
    s = Sample(({"role": "assistant", "content": "yo"}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "how"}), "r")
    assert labelled_text(tok, s) == "yo<|im_end|>\nhow<|im_end|>\n"


def test_conversational_prompt_completion_trains_only_the_completion(char_tok):
    row = {"prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "oh"},
                      {"role": "user", "content": "i"}],
           "completion": [{"role": "assistant", "content": "yo"}]}
    ex = tokenize_sample(char_tok, to_sample(Record(row, "r")), 64)
    assert [t for t, lab in zip(ex.input_ids, ex.labels) if lab != IGNORE_INDEX] == ids(char_tok, "y", "o", "<|eos|>")


def test_non_utf8_file_names_the_line_and_bom_is_accepted(tmp_path):
    (tmp_path / "latin1.jsonl").write_bytes(b'{"instruction": "a", "output": "b"}\n{"instruction": "caf\xe9", "output": "x"}\n')
    with pytest.raises(DataError, match=r"latin1.jsonl, line 2: not UTF-8 text \(byte 0xe9"):
        read_records(tmp_path / "latin1.jsonl")
    (tmp_path / "bom.jsonl").write_bytes(b'\xef\xbb\xbf{"instruction": "a", "output": "b"}\n')
    assert read_records(tmp_path / "bom.jsonl")[0].row == {"instruction": "a", "output": "b"}


def test_text_rows_train_every_token_and_hh_text_is_a_chat(char_tok):
    """{"text"}: plain text, every token labelled (no template); a raw HH transcript in it becomes
    the chat it is, its answers trained."""
    plain = to_sample(Record({"text": "hi yo"}, "t.jsonl, line 1"))
    assert not plain.templated
    ex = tokenize_sample(char_tok, plain, 64)
    assert all(label != IGNORE_INDEX for label in ex.labels)
    hh = to_sample(Record({"text": "\n\nHuman: hi\n\nAssistant: yo\n\nHuman: again?\n\nAssistant: yo yo"},
                          "t.jsonl, line 2"))
    assert hh.templated and [m["role"] for m in hh.messages] == ["user", "assistant", "user", "assistant"]
    assert hh.messages[3]["content"] == "yo yo"


def test_a_trailing_user_turn_is_trimmed_and_counted(tmp_path, char_tok):
    """Real conversations sometimes end with an unanswered user turn: it is trimmed, the row trains
    on the assistant turns before it, and the data report counts the repair."""
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                          {"role": "user", "content": "and?"}]},
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo yo"}]}]
    path = write_jsonl(tmp_path / "chats.jsonl", rows)
    s = to_sample(Record(rows[0], "x"))
    assert [m["content"] for m in s.messages] == ["hi", "yo"] and s.fixes == ("trailing user turn trimmed",)
    data = build_sft_data(DataConfig(train_path=str(path), eval_fraction=0.0), char_tok, 0)
    d = data.report.as_dict()
    assert len(data.train) == 2 and d["train"]["fixed"] == {"trailing user turn trimmed": 1}
    assert d["train"]["fixed_examples"]["trailing user turn trimmed"] == [f"{path}, line 1"]
    assert "fixed: 1 trailing user turn trimmed" in data.report.lines()[0]


CONVO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
         {"role": "assistant", "content": "yo"}, {"role": "user", "content": "again"},
         {"role": "assistant", "content": "yo yo"}]


@pytest.mark.parametrize("name, expected", [
    ("chatml", "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
               "yo<|im_end|>\n<|im_start|>user\nagain<|im_end|>\n<|im_start|>assistant\nyo yo<|im_end|>\n"),
    ("llama3", "{bos}<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user"
               "<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nyo<|eot_id|>"
               "<|start_header_id|>user<|end_header_id|>\n\nagain<|eot_id|><|start_header_id|>assistant"
               "<|end_header_id|>\n\nyo yo<|eot_id|>"),
    ("zephyr", "<|system|>\nBe brief.{eos}\n<|user|>\nhi{eos}\n<|assistant|>\nyo{eos}\n<|user|>\nagain{eos}\n"
               "<|assistant|>\nyo yo{eos}\n"),
    ("alpaca", "{bos}Be brief.\n\n### Instruction:\nhi\n\n### Response:\nyo{eos}\n\n### Instruction:\nagain\n\n"
               "### Response:\nyo yo{eos}\n\n"),
])
def test_built_in_chat_templates_render_and_train_only_the_answers(tokenizer, name, expected):
    """Each built-in renders the conversation as written out here, and SFT labels exactly the two
    answers (and the EOS after the last)."""
    import copy

    from alignkit.data.templates import choose_chat_template, render

    tok = copy.deepcopy(tokenizer)
    choose_chat_template(tok, name)
    assert render(tok, CONVO) == expected.format(bos=tok.bos_token or "", eos=tok.eos_token)
    ex = tokenize_sample(tok, to_sample(Record({"messages": CONVO}, "x")), 512)
    trained = tok.decode([t for t, label in zip(ex.input_ids, ex.labels) if label != IGNORE_INDEX])
    assert "yo" in trained and "yo yo" in trained and "hi" not in trained and "again" not in trained


def test_a_jinja_file_or_a_clear_error(tokenizer, tmp_path):
    import copy

    from alignkit.data.templates import choose_chat_template, render
    from alignkit.errors import ConfigError

    tok = copy.deepcopy(tokenizer)
    path = tmp_path / "t.jinja"
    path.write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}")
    choose_chat_template(tok, str(path))
    assert render(tok, CONVO[1:3]) == "[user] hi\n[assistant] yo\n"
    with pytest.raises(ConfigError, match="did you mean 'chatml'"):
        choose_chat_template(tok, "chatlm")
    with pytest.raises(ConfigError, match="no such file"):
        choose_chat_template(tok, str(tmp_path / "missing.jinja"))
