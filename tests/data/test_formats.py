"""Every format in -> one normalized schema; validation names file and line."""

import json

import pytest

from sft_sweep.data.prepare import Problems, load_rows
from sft_sweep.errors import UserError
from tests.helpers import FIXTURES

F = FIXTURES / "formats"


def spec(name, fmt="auto", field_map=None):
    return {"path": str(F / name), "format": fmt, "field_map": field_map, "split": "train", "name": name.split(".")[0]}


def load(name, fmt="auto", field_map=None, on_error="skip"):
    problems = Problems(on_error)
    return load_rows(spec(name, fmt, field_map), 20000, problems), problems


def test_messages_rows_with_tool_calls_chinese_and_bad_lines():
    rows, problems = load("messages.jsonl")
    assert [r["id"] for r in rows] == ["m1", "m2", "m3", "m3-dup", "m8"]
    assert rows[0]["messages"][0]["content"].startswith("小明有3个苹果")
    call = rows[1]["messages"][2]["tool_calls"][0]["function"]
    assert call == {"name": "get_weather", "arguments": {"city": "Paris"}}  # JSON text read as the mapping it is
    assert rows[1]["tools"][0]["function"]["name"] == "get_weather"
    # `conversations` with role/content reads as messages; control characters are stripped
    assert [m["content"] for m in rows[4]["messages"]] == ["ctrlchar", "cleaned"]
    path = F / "messages.jsonl"
    assert problems.as_dict() == {
        "invalid JSON: Expecting ',' delimiter": {"count": 1,
                                                  "first": [f"{path}:5: invalid JSON: Expecting ',' delimiter"]},
        "no assistant turn": {"count": 1, "first": [f"{path}:6: no assistant turn"]},
        "tool-call arguments are not valid JSON: '{not json'": {
            "count": 1, "first": [f"{path}:7: tool-call arguments are not valid JSON: '{{not json'"]},
        "tool message N does not follow an assistant tool call": {
            "count": 1, "first": [f"{path}:8: tool message 1 does not follow an assistant tool call"]},
    }


def test_on_error_raise_names_file_and_line():
    with pytest.raises(UserError) as err:
        load("messages.jsonl", on_error="raise")
    assert str(err.value) == f"{F / 'messages.jsonl'}:5: invalid JSON: Expecting ',' delimiter"


def test_alpaca_with_system_and_history():
    rows, problems = load("alpaca.json", "alpaca")
    assert len(rows) == 4 and problems.counts == {"assistant message N has neither content nor tool calls": 1}
    assert [r["id"] for r in rows] == ["alpaca-1", "alpaca-2", "alpaca-3", "alpaca-4"]  # source-row ids
    assert rows[0]["messages"] == [{"role": "user", "content": "Add the numbers.\n2 and 3"},  # LLaMA-Factory's join
                                   {"role": "assistant", "content": "5"}]
    assert rows[1]["messages"][0] == {"role": "system", "content": "You are a classifier."}
    assert [m["role"] for m in rows[2]["messages"]] == ["user", "assistant", "user", "assistant"]
    assert problems.first["assistant message N has neither content nor tool calls"] == [
        f"{F / 'alpaca.json'} row 5: assistant message 1 has neither content nor tool calls"]


def test_sharegpt_function_call_and_observation():
    rows, problems = load("sharegpt.json")
    assert len(rows) == 3 and list(problems.counts) == ["unknown ShareGPT speaker 'robot'"]
    msgs = rows[0]["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool", "assistant"]
    assert msgs[2]["tool_calls"][0]["function"]["arguments"] == {"a": 12, "b": 30}
    assert rows[0]["tools"] == [{"type": "function", "function": {"name": "add"}}]  # parsed from a JSON string


def test_prompt_completion_text_and_field_mapping():
    rows, _ = load("prompt_completion.jsonl")
    assert [[m["content"] for m in r["messages"]] for r in rows] == [["Capital of France?", "Paris"], ["2*3?", "6"]]
    rows, problems = load("text.jsonl")
    assert rows[0]["messages"] is None and rows[0]["text"].startswith("Plain") and problems.counts == {"empty text": 1}
    rows, _ = load("qa.csv", "mapping", {"question": "user", "golden": "assistant"})
    assert rows[0]["messages"] == [{"role": "user", "content": "小红有5本书，送出2本，还剩几本？"},
                                   {"role": "assistant", "content": "3"}]
    with pytest.raises(UserError, match=r"qa.csv:2: field_map column 'answer' missing from row"):
        load("qa.csv", "mapping", {"question": "user", "answer": "assistant"}, on_error="raise")


def test_parquet_and_save_to_disk_sources(tmp_path):
    from datasets import Dataset, DatasetDict

    table = [{"prompt": "a?", "completion": "A"}, {"prompt": "b?", "completion": "B"}]
    Dataset.from_list(table).to_parquet(str(tmp_path / "pc.parquet"))
    DatasetDict({"train": Dataset.from_list(table)}).save_to_disk(str(tmp_path / "saved"))
    for path in (tmp_path / "pc.parquet", tmp_path / "saved"):
        rows = load_rows({"path": str(path), "format": "auto", "field_map": None, "split": "train", "name": "x"},
                         None, Problems("raise"))
        assert [r["messages"][1]["content"] for r in rows] == ["A", "B"]


def test_missing_file_and_unreachable_hub_dataset():
    with pytest.raises(UserError, match="data file not found: /no/such.jsonl"):
        load_rows({"path": "/no/such.jsonl", "format": "auto", "field_map": None, "split": "train", "name": "x"},
                  None, Problems("raise"))
    with pytest.raises(UserError) as err:
        load_rows({"path": "banghua/DL-SFT-Dataset", "format": "auto", "field_map": None, "split": "train",
                   "name": "x"}, None, Problems("raise"))
    assert "'banghua/DL-SFT-Dataset'" in str(err.value) and "\n" not in str(err.value)


def test_over_long_answers_are_cut(tmp_path):
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "q"},
                                             {"role": "assistant", "content": "x" * 50}]}) + "\n")
    rows = load_rows({"path": str(path), "format": "auto", "field_map": None, "split": "train", "name": "l"}, 10,
                     Problems("raise"))
    assert rows[0]["messages"][1]["content"] == "x" * 10


def test_invalid_utf8_is_reported(tmp_path):
    path = tmp_path / "surrogate.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "bad \\ud800"}, '
                    '{"role": "assistant", "content": "x"}]}\n')
    with pytest.raises(UserError, match=rf"^{path}:1: text is not valid UTF-8$"):
        load_rows({"path": str(path), "format": "auto", "field_map": None, "split": "train", "name": "s"}, None,
                  Problems("raise"))


def test_typed_content_parts_openai_and_llamafactory_v1():
    """OpenAI's text parts and LLaMA-Factory v1's text / reasoning / tool_call parts normalize to the conversation
    their plain equivalents give; tool-call arguments are a mapping whatever the source wrote; a picture in a
    text-only run and arguments that are no JSON object are row errors naming the message."""
    rows, problems = load("content_parts.jsonl")
    by_id = {r["id"]: r for r in rows}
    assert sorted(by_id) == ["openai-legacy-function", "openai-text", "openai-tools", "v1-reasoning-tools"]
    assert [m["content"] for m in by_id["openai-text"]["messages"]] == [
        "Be brief.", "Add 2 and 3.\nAnswer with a number.", "5"]  # text parts joined as vLLM's server joins them
    plain_call = [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]
    openai = by_id["openai-tools"]["messages"]
    assert openai[1] == {"role": "assistant", "content": "", "tool_calls": plain_call}
    assert openai[2] == {"role": "tool", "content": '{"temperature_c": 15}'}
    assert by_id["openai-legacy-function"]["messages"][1:3] == openai[1:3]  # function_call / role function
    v1 = by_id["v1-reasoning-tools"]
    assert v1["messages"] == [
        {"role": "system", "content": "Use the tools."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": plain_call,
         "reasoning_content": "I should call get_weather."},
        {"role": "tool", "content": '{"temperature_c": 15}'},
        {"role": "assistant", "content": "It is 15 degrees in Paris.", "reasoning_content": "The tool says 15."}]
    assert v1["tools"] == by_id["openai-tools"]["tools"]
    path = F / "content_parts.jsonl"
    assert {kind: p["first"] for kind, p in problems.as_dict().items()} == {
        "message N has a part of type 'image_url': sft-sweep trains text-only models (drop the part, or the row)": [
            f"{path}:4: message 0 has a part of type 'image_url': sft-sweep trains text-only models (drop the part, "
            f"or the row)"],
        "tool-call arguments are not a JSON object: '[N, N]'": [
            f"{path}:6: tool-call arguments are not a JSON object: '[2, 3]'"]}


def test_bare_tool_schemas_are_wrapped_as_a_server_passes_them():
    rows, _ = load("sharegpt.json")
    assert rows[0]["tools"] == [{"type": "function", "function": {"name": "add"}}]
    from sft_sweep.data.formats import normalize

    row = normalize({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
                     "tools": '[{"name": "add", "parameters": {"type": "object"}}]'}, "sharegpt")
    assert row["tools"] == [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
