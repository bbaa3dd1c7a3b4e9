"""The assistant mask, across real chat templates: decoding exactly the trained positions gives
the assistant contents plus the end-of-turn token, and nothing else."""

import json
from pathlib import Path

import pytest
import trl
from transformers import AutoTokenizer

from sft_sweep.config import asset_path
from sft_sweep.data.tokenize import without_reasoning
from sft_sweep.masking import encode, end_of_turn_token
from tests.helpers import SHARED

TRL_TEMPLATES = Path(trl.__file__).parent / "chat_templates"
QWEN3_TOKENIZER = SHARED / "data/tokenizers/qwen3"
needs_qwen3 = pytest.mark.skipif(not QWEN3_TOKENIZER.is_dir(), reason="needs ../shared (the real Qwen3 tokenizer)")
LLAMA_SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>",
                  "<|python_tag|>"]


def tiny():
    return AutoTokenizer.from_pretrained(asset_path("tiny_tokenizer"))


def qwen3(template: str | None = None):
    tok = AutoTokenizer.from_pretrained(QWEN3_TOKENIZER)
    if template:
        tok.chat_template = (TRL_TEMPLATES / template).read_text()
    return tok


def llama3(template: str):
    # The tiny tokenizer plus Llama-3's special tokens renders Llama-3 templates exactly as Llama's would.
    tok = tiny()
    tok.add_special_tokens({"additional_special_tokens": LLAMA_SPECIALS})
    tok.bos_token = "<|begin_of_text|>"
    tok.chat_template = (TRL_TEMPLATES / template).read_text()
    return tok


TEMPLATES = {
    "tiny": (tiny, "<|im_end|>"),
    "qwen3 (real tokenizer)": (lambda: qwen3(), "<|im_end|>"),
    "trl qwen3": (lambda: qwen3("qwen3.jinja"), "<|im_end|>"),
    "trl qwen3_training": (lambda: qwen3("qwen3_training.jinja"), "<|im_end|>"),
    "trl qwen3_instruct_2507": (lambda: qwen3("qwen3_instruct_2507.jinja"), "<|im_end|>"),
    "trl qwen3_instruct_2507_training": (lambda: qwen3("qwen3_instruct_2507_training.jinja"), "<|im_end|>"),
    "trl llama3": (lambda: llama3("llama3.jinja"), "<|eot_id|>"),
    "trl llama3_1": (lambda: llama3("llama3_1.jinja"), "<|eot_id|>"),
    "trl llama3_2": (lambda: llama3("llama3_2.jinja"), "<|eot_id|>"),
}


def trained_runs(tok, ids, mask) -> list[str]:
    """Each contiguous run of trained tokens, decoded."""
    runs, start = [], None
    for i, m in enumerate(list(mask) + [0]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            runs.append(tok.decode(ids[start:i]))
            start = None
    return runs


def u(text):
    return {"role": "user", "content": text}


def a(text, **extra):
    return {"role": "assistant", "content": text, **extra}


CONVERSATIONS = {
    "single": [u("What is 2+3?"), a("5")],
    "system + json": [{"role": "system", "content": "Answer in JSON."}, u("Sentiment of: I love it"),
                      a('{"sentiment": "positive"}')],
    "multi-turn chinese": [u("小明有3个苹果，又买了2个。现在有几个？"), a("5个"), u("再乘以2是多少？"), a("10个")],
    "three turns": [u("a"), a("b"), u("c"), a("d"), u("e"), a("f g h")],
}


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_trained_tokens_are_assistant_contents_plus_end_of_turn(template, conversation):
    make, eot = TEMPLATES[template]
    if template != "tiny" and "llama" not in template and not QWEN3_TOKENIZER.is_dir():
        pytest.skip("needs ../shared")
    tok = make()
    messages = CONVERSATIONS[conversation]
    assert end_of_turn_token(tok) == eot
    enc = encode(tok, messages)
    expected = [m["content"] + eot for m in messages if m["role"] == "assistant"]
    assert trained_runs(tok, enc.input_ids, enc.assistant_masks) == expected
    last = encode(tok, messages, train_on="last_assistant")
    assert trained_runs(tok, last.input_ids, last.assistant_masks) == expected[-1:]


@needs_qwen3
@pytest.mark.parametrize("template", [None, "qwen3.jinja", "qwen3_training.jinja"])
def test_qwen3_thinking_trained_when_on_and_empty_think_never(template):
    tok = qwen3(template)
    messages = [u("2+2?"), a("4", reasoning_content="Two plus two is four.")]
    enc = encode(tok, messages)
    assert trained_runs(tok, enc.input_ids, enc.assistant_masks) == [
        "<think>\nTwo plus two is four.\n</think>\n\n4<|im_end|>"]
    # thinking off: the reasoning is dropped; the template still writes an empty think block...
    off = encode(tok, without_reasoning(messages))
    assert "<think>\n\n</think>\n\n4" in tok.decode(off.input_ids)
    # ...which is prompt, not target
    assert trained_runs(tok, off.input_ids, off.assistant_masks) == ["4<|im_end|>"]


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
TOOL_CONVERSATION = [
    u("Weather in Paris?"),
    a("", tool_calls=[{"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]),
    {"role": "tool", "content": '{"temperature_c": 18}'},
    a("It is 18 degrees."),
]


@pytest.mark.parametrize("template", ["tiny", "qwen3 (real tokenizer)", "trl qwen3_instruct_2507"])
def test_tool_calls_trained_by_switch_and_tool_results_never(template):
    if template != "tiny" and not QWEN3_TOKENIZER.is_dir():
        pytest.skip("needs ../shared")
    tok = TEMPLATES[template][0]()
    enc = encode(tok, TOOL_CONVERSATION, TOOLS)
    runs = trained_runs(tok, enc.input_ids, enc.assistant_masks)
    assert runs == ['<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>',
                    "It is 18 degrees.<|im_end|>"]
    assert "temperature_c" not in "".join(runs)  # the tool result is never trained
    off = encode(tok, TOOL_CONVERSATION, TOOLS, train_tool_calls=False)
    assert trained_runs(tok, off.input_ids, off.assistant_masks) == ["It is 18 degrees.<|im_end|>"]


def test_every_sample_row_trains_only_assistant_text():
    tok = tiny()
    rows = [json.loads(line) for line in open(asset_path("sample/chat.jsonl"), encoding="utf-8")][:300]
    for row in rows:
        enc = encode(tok, row["messages"], row.get("tools"))
        expected = []
        for m in row["messages"]:
            if m["role"] != "assistant":
                continue
            if m.get("tool_calls"):
                fn = m["tool_calls"][0]["function"]
                expected.append('<tool_call>\n{"name": "%s", "arguments": %s}\n</tool_call><|im_end|>' % (
                    fn["name"], json.dumps(fn["arguments"])))
            else:
                expected.append(m["content"] + "<|im_end|>")
        assert trained_runs(tok, enc.input_ids, enc.assistant_masks) == expected, row["id"]


AGENT_TURNS = [  # two user turns, each answered with reasoning, the first through a tool
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "reasoning_content": "Call the tool.",
     "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "content": "15"},
    {"role": "assistant", "content": "15 degrees.", "reasoning_content": "The tool said 15."},
    {"role": "user", "content": "And in Rome?"},
    {"role": "assistant", "content": "I cannot tell without the tool.", "reasoning_content": "No call this time."},
]


@pytest.mark.parametrize("name", ["tiny", "qwen3 (real tokenizer)"])
def test_a_turn_trains_in_the_context_the_model_answers_it_in(name):
    """Qwen3's template (and the tiny one, its copy) drops the reasoning of turns before the last user message: in
    the whole render, the first answers stand without their reasoning, yet the model wrote each of them right
    after its own earlier reasoning. Such a conversation trains as one sequence per user turn: the messages up to
    the next user turn, training the turns that answer it, each with its reasoning, in the context it was
    answered in; every turn trains once."""
    from sft_sweep.masking import TurnNotFound, encode_sequences

    make, eot = TEMPLATES[name]
    if name != "tiny" and not QWEN3_TOKENIZER.is_dir():
        pytest.skip("needs ../shared (the real Qwen3 tokenizer)")
    tok = make()
    with pytest.raises(TurnNotFound):
        encode(tok, AGENT_TURNS)  # as one sequence the first answers cannot be located
    first, second = encode_sequences(tok, AGENT_TURNS)
    for sequence, end in ((first, 4), (second, 6)):
        assert sequence.input_ids == tok.apply_chat_template(AGENT_TURNS[:end], tokenize=True)["input_ids"]
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert trained_runs(tok, first.input_ids, first.assistant_masks) == [
        f"<think>\nCall the tool.\n</think>\n\n{call}{eot}",
        f"<think>\nThe tool said 15.\n</think>\n\n15 degrees.{eot}"]
    assert trained_runs(tok, second.input_ids, second.assistant_masks) == [
        f"<think>\nNo call this time.\n</think>\n\nI cannot tell without the tool.{eot}"]
    assert "The tool said 15." not in tok.decode(second.input_ids)  # the template's own history, as served
