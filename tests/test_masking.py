"""The assistant mask: exactly the assistant contents plus the end-of-turn token are trained."""

import json

import pytest
from transformers import AutoTokenizer

from sft_sweep.masking import encode, end_of_turn_token
from sft_sweep.resolvers import asset_path
from tests.conftest import SHARED


@pytest.fixture(scope="module")
def tiny_tok():
    return AutoTokenizer.from_pretrained(asset_path("tiny_tokenizer"))


def trained_text(tok, enc) -> str:
    return tok.decode([t for t, m in zip(enc.input_ids, enc.assistant_masks) if m])


def test_end_of_turn_token(tiny_tok):
    assert end_of_turn_token(tiny_tok) == "<|im_end|>"


def test_multi_turn_trains_every_assistant_turn(tiny_tok):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "小明有3个苹果"},
            {"role": "assistant", "content": "3"}, {"role": "user", "content": "times 2?"},
            {"role": "assistant", "content": "6"}]
    enc = encode(tiny_tok, msgs)
    assert trained_text(tiny_tok, enc) == "3<|im_end|>6<|im_end|>"
    assert trained_text(tiny_tok, encode(tiny_tok, msgs, train_on="last_assistant")) == "6<|im_end|>"
    # the header is never trained: the token right before the first trained one is "\n" of the header
    first = enc.assistant_masks.index(1)
    assert tiny_tok.decode(enc.input_ids[:first]).endswith("<|im_start|>assistant\n")


def test_sample_rows_train_only_assistant_text(tiny_tok):
    rows = [json.loads(line) for line in open(asset_path("sample/chat.jsonl"), encoding="utf-8")][:200]
    for row in rows:
        enc = encode(tiny_tok, row["messages"], row.get("tools"))
        expected = ""
        for m in row["messages"]:
            if m["role"] != "assistant":
                continue
            if m.get("tool_calls"):
                fn = m["tool_calls"][0]["function"]
                expected += '<tool_call>\n{"name": "%s", "arguments": %s}\n</tool_call>' % (
                    fn["name"], json.dumps(fn["arguments"]))
            else:
                expected += m["content"]
            expected += "<|im_end|>"
        assert trained_text(tiny_tok, enc) == expected, row["id"]


@pytest.mark.skipif(not (SHARED / "data/tokenizers/qwen3").is_dir(), reason="needs ../shared")
def test_real_qwen3_template_never_trains_the_empty_think_block():
    tok = AutoTokenizer.from_pretrained(SHARED / "data/tokenizers/qwen3")
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    enc = encode(tok, msgs)
    assert "<think>\n\n</think>\n\n4" in tok.decode(enc.input_ids)  # the template inserts it...
    assert trained_text(tok, enc) == "hello<|im_end|>4<|im_end|>"  # ...and it is not trained
