"""Reading, validating and splitting chat rows; errors name file and row."""

import json

import pytest
from transformers import AutoTokenizer

from sft_sweep.data import build_datasets, load_chat_file, split_rows
from sft_sweep.errors import UserError
from sft_sweep.resolvers import asset_path
from tests.conftest import FIXTURES, plain


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(UserError, match=f"data file not found: {missing}"):
        load_chat_file(str(missing))


def test_row_without_assistant_names_file_and_row():
    path = FIXTURES / "no_assistant.jsonl"
    with pytest.raises(UserError) as err:
        load_chat_file(str(path))
    assert str(err.value) == f"{path}:3: conversation has no assistant turn"


def test_invalid_json_names_file_and_line():
    path = FIXTURES / "bad_json.jsonl"
    with pytest.raises(UserError, match=rf"^{path}:2: invalid JSON"):
        load_chat_file(str(path))


def test_json_list_file_and_unknown_role(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]}]))
    with pytest.raises(UserError, match=r"rows.json row 1: message 1 has unknown role 'bot'"):
        load_chat_file(str(path))


def test_split_sizes_are_exact_and_seeded():
    rows = list(range(2400))
    train, val = split_rows(rows, 0.1, 100, seed=42)
    assert (len(train), len(val)) == (2160, 240) and sorted(train + val) == rows
    assert split_rows(rows, 0.1, 100, seed=42) == (train, val)
    assert split_rows(rows, 0.1, 100, seed=7)[1] != val
    # A tiny dataset: min_val_size is capped so at least half stays for training.
    assert [len(x) for x in split_rows(list(range(10)), 0.1, 100, seed=0)] == [5, 5]
    assert [len(x) for x in split_rows(list(range(300)), 0.01, 100, seed=0)] == [200, 100]


def test_sample_data_covers_the_promised_tasks():
    rows = [json.loads(line) for line in open(asset_path("sample/chat.jsonl"), encoding="utf-8")]
    tags = {t for r in rows for t in r["tags"]}
    assert len(rows) == 2400 and {"arithmetic", "json", "multi_turn", "tool_call"} <= tags
    assert any("\u4e00" <= ch <= "\u9fff" for r in rows[:50] for m in r["messages"] for ch in m["content"])
    assert any("tool_calls" in m for r in rows for m in r["messages"])


def test_build_datasets_drops_rows_truncated_to_no_assistant_token():
    c = plain("data.val_ratio=0.5", "data.min_val_size=1")
    tok = AutoTokenizer.from_pretrained(c["model"]["tokenizer"])
    c["data"]["path"] = str(FIXTURES / "no_assistant.jsonl")
    with pytest.raises(UserError):
        build_datasets(c["data"], tok, 64)
    c["data"]["path"] = asset_path("sample/chat.jsonl")
    train, val = build_datasets(c["data"], tok, 1024)
    assert (len(train), len(val)) == (1200, 1200)
    # Tool-call rows carry a long system prompt: at 40 tokens their assistant turns are cut off.
    short_train, _ = build_datasets(c["data"], tok, 40)
    assert len(short_train) < len(train)
    assert max(len(ids) for ids in short_train["input_ids"]) == 40
