"""Every model preset on its real chat template: the rendered ids are the template's own, the trained tokens are
exactly the assistant's turns and their end-of-turn token, tool-call arguments are rendered as the JSON object they
are, and a random-init model of the preset's architecture (its real config shrunk) trains 10 steps and exports.

Where each template and tokenizer comes from (README, "Model presets"):
- the model's own tokenizer_config.json from ../shared/data/tokenizers (Qwen3, Qwen2.5; Phi-3-mini holds Llama-2's
  SentencePiece vocabulary), or the tiny model's, which the project ships;
- TRL's copies of the original templates (trl/chat_templates: llama3_1.jinja, qwen3_instruct_2507.jinja);
- the preset's own (llama2.jinja: the base model ships none), or a copy written from the model card
  (tests/fixtures/chat_templates/smollm2.jinja).
Where the real tokenizer is not here (Llama-3.1, SmolLM2), the tiny tokenizer stands in, with the family's special
tokens added: the template, its special tokens and the masking are the real ones, the vocabulary is not.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trl
from transformers import AutoTokenizer

from sft_sweep.config import asset_path
from sft_sweep.data.formats import RowError
from sft_sweep.data.prepare import Problems, load_rows
from sft_sweep.data.tokenize import RowEncoder
from sft_sweep.export import main as export_cli
from sft_sweep.model import build_tokenizer
from sft_sweep.run_dir import RunDir
from tests.helpers import FIXTURES, SHARED, compose_cfg, run_cli

TOKENIZERS = SHARED / "data" / "tokenizers"
TRL_TEMPLATES = Path(trl.__file__).parent / "chat_templates"
SMALL = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
         "num_key_value_heads": 1, "head_dim": 32, "max_position_embeddings": 2048}
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>",
                   "<|python_tag|>", "<|finetune_right_pad_id|>"]


@dataclass
class Preset:
    tokenizer: str  # a folder of ../shared/data/tokenizers, "tiny", or "tiny+llama3" (a stand-in)
    template: Path | None  # None: the tokenizer's own
    architecture: dict  # the preset model's config, shrunk (model_type and what sets the family apart)
    call: str | None  # how the template writes the weather call (None: it has no place for tool calls)
    thinks: bool  # renders reasoning_content
    specials: dict = field(default_factory=dict)


QWEN_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}\n</tool_call>'
PRESETS = {
    "tiny": Preset("tiny", None, {"model_type": "qwen3", "tie_word_embeddings": False}, QWEN_CALL, True),
    "qwen3_4b": Preset("qwen3", None, {"model_type": "qwen3", "tie_word_embeddings": True}, QWEN_CALL, True),
    "qwen3_0_6b_base": Preset("qwen3", None, {"model_type": "qwen3", "tie_word_embeddings": True}, QWEN_CALL, True),
    "qwen3_4b_instruct_2507": Preset("qwen3", TRL_TEMPLATES / "qwen3_instruct_2507.jinja",
                                     {"model_type": "qwen3", "tie_word_embeddings": True}, QWEN_CALL, False),
    "qwen2_5_7b_instruct": Preset("qwen2.5", None, {"model_type": "qwen2", "tie_word_embeddings": False},
                                  QWEN_CALL, False),
    "llama3_1_8b_instruct": Preset("tiny", TRL_TEMPLATES / "llama3_1.jinja",
                                   {"model_type": "llama", "tie_word_embeddings": False},
                                   '{"name": "get_weather", "parameters": {"city": "Paris", "days": 2}}', False,
                                   {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
                                    "additional_special_tokens": LLAMA3_SPECIALS}),
    "llama2_7b": Preset("phi-3-mini", None, {"model_type": "llama", "tie_word_embeddings": False}, None, False),
    "smollm2_135m": Preset("tiny", FIXTURES / "chat_templates" / "smollm2.jinja",
                           {"model_type": "llama", "tie_word_embeddings": True}, None, False),
}

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather forecast of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["city"]}}}
CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}
# The fixed conversations every template renders: (messages, tools). OpenAI-standard messages, as a user would
# hand them to apply_chat_template.
CONVERSATIONS = {
    "single": ([{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5"}], None),
    "multi": ([{"role": "user", "content": "Ben has 5 cards and gets 2 more. How many now?"},
               {"role": "assistant", "content": "7"}, {"role": "user", "content": "What is that times 2?"},
               {"role": "assistant", "content": "14"}], None),
    "system": ([{"role": "system", "content": "Answer in JSON."},
                {"role": "user", "content": "Classify: the pizza was great."},
                {"role": "assistant", "content": '{"sentiment": "positive"}'}], None),
    "tools": ([{"role": "user", "content": "Weather in Paris for 2 days?"},
               {"role": "assistant", "content": "", "tool_calls": [CALL]},
               {"role": "tool", "content": '{"forecast": "sunny"}'},
               {"role": "assistant", "content": "Sunny for the next 2 days."}], [WEATHER_TOOL]),
    "thinking": ([{"role": "user", "content": "Is 7 prime?"},
                  {"role": "assistant", "content": "Yes.", "reasoning_content": "7 has no divisor but 1 and 7."}],
                 None),
}
MASKING = {"train_on": "all_assistant", "train_tool_calls": True, "thinking": True, "on_error": "raise"}


def tokenizer_dir(preset: Preset, tmp: Path) -> Path | None:
    """The preset's tokenizer as a folder (None: ../shared is absent)."""
    if preset.tokenizer != "tiny":
        folder = TOKENIZERS / preset.tokenizer
        return folder if folder.is_dir() else None
    if not preset.specials:
        return Path(asset_path("tiny_tokenizer"))
    stand_in = AutoTokenizer.from_pretrained(asset_path("tiny_tokenizer"))
    stand_in.add_special_tokens(preset.specials)
    stand_in.save_pretrained(tmp)
    return tmp


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """{preset: the tokenizer build_tokenizer gives the preset (its template set)}; None where ../shared is absent."""
    out = {}
    for name, preset in PRESETS.items():
        folder = tokenizer_dir(preset, tmp_path_factory.mktemp(name))
        out[name] = None if folder is None else build_tokenizer(model_cfg(name, folder))
    return out


def model_cfg(name: str, folder: Path) -> dict:
    """The preset's model group as composed, with the tokenizer and template this test has for it."""
    preset = PRESETS[name]
    cfg = compose_cfg(f"model={name}", "model.name_or_path=null", f"model.tokenizer={folder}",
                      *([f"model.chat_template={preset.template}"] if preset.template else []))
    from sft_sweep.config import plain

    return plain(cfg)["model"]


def get(tokenizers, name):
    if tokenizers[name] is None:
        pytest.skip(f"../shared is absent: the {PRESETS[name].tokenizer} tokenizer is in ../shared/data/tokenizers")
    return tokenizers[name]


def trained_runs(tokenizer, encoded) -> list[str]:
    """The trained tokens, decoded run by run."""
    runs, run = [], []
    for token, trained in zip(encoded.input_ids + [None], encoded.assistant_masks + [0]):
        if trained:
            run.append(token)
        elif run:
            runs.append(tokenizer.decode(run))
            run = []
    return runs


def expected_answers(preset: Preset, messages: list[dict]) -> list[str]:
    """What each assistant turn says, as the template writes it (its end-of-turn token aside)."""
    out = []
    for m in messages:
        if m["role"] != "assistant":
            continue
        text = preset.call if m.get("tool_calls") else m["content"]
        if preset.thinks and m.get("reasoning_content"):  # an empty think block is the prompt's, never trained
            text = f"<think>\n{m['reasoning_content']}\n</think>\n\n{text}"
        out.append(text)
    return out


@pytest.mark.parametrize("name", PRESETS)
def test_each_preset_trains_exactly_the_assistant_turns_of_its_real_template(name, tokenizers):
    tokenizer, preset = get(tokenizers, name), PRESETS[name]
    encode = RowEncoder(tokenizer, MASKING)
    for kind, (messages, tools) in CONVERSATIONS.items():
        row = {"messages": messages, "tools": tools}
        if kind == "tools" and preset.call is None:  # refused in one line, never trained without its call
            with pytest.raises(RowError, match="the chat template has no place for its tool calls"):
                encode(row)
            continue
        [encoded] = encode(row)
        # the ids are the template's own rendering, token for token
        assert encoded.input_ids == tokenizer.apply_chat_template(messages, tools=tools, tokenize=True)["input_ids"]
        runs = trained_runs(tokenizer, encoded)
        assert all(run.endswith(encode.eot) for run in runs), (kind, runs)
        answers = [run[: -len(encode.eot)].strip() for run in runs]
        assert answers == [a.strip() for a in expected_answers(preset, messages)], (kind, runs)
    assert encode.reasoning_dropped == (0 if preset.thinks else 1)  # counted where the template has no place


GLAIVE_LIKE_MESSAGES = [
    {"role": "user", "content": "帮我查一下巴黎未来2天的天气。"},
    {"role": "assistant", "content": "", "tool_calls": [CALL]},
    {"role": "tool", "content": '{"forecast": "晴"}'},
    {"role": "assistant", "content": "巴黎未来2天都是晴天。"},
]


@pytest.mark.parametrize("name", PRESETS)
def test_glaive_tool_calls_render_their_arguments_as_an_object_on_every_preset(name, tokenizers):
    """A glaive-style ShareGPT row (function_call JSON text, tools as a JSON string of bare schemas) gives, through
    the pipeline, the ids apply_chat_template gives the same conversation in OpenAI-standard messages; the
    arguments are an object in the trained text, never a quoted string."""
    tokenizer, preset = get(tokenizers, name), PRESETS[name]
    [row] = load_rows({"path": str(FIXTURES / "formats" / "glaive_like.json"), "format": "sharegpt",
                       "field_map": None, "split": "train", "name": "glaive"}, None, Problems("raise"))
    encode = RowEncoder(tokenizer, MASKING)
    if preset.call is None:
        with pytest.raises(RowError, match="no place for its tool calls and tool schemas"):
            encode(row)
        return
    [encoded] = encode(row)
    assert encoded.input_ids == tokenizer.apply_chat_template(GLAIVE_LIKE_MESSAGES, tools=[WEATHER_TOOL],
                                                              tokenize=True)["input_ids"]
    trained = trained_runs(tokenizer, encoded)[0]
    assert '{"city": "Paris", "days": 2}' in trained and '"{\\"city' not in tokenizer.decode(encoded.input_ids)


@pytest.mark.parametrize("name", [n for n, p in PRESETS.items() if p.call])
def test_real_glaive_rows_render_as_the_template_renders_openai_messages(name, tokenizers):
    """glaive_toolcall_zh_demo rows 1-50 (../shared): our ids equal apply_chat_template on the OpenAI-standard
    conversation built straight from each row, and every call's arguments are an object."""
    path = SHARED / "data" / "llamafactory" / "glaive_toolcall_zh_demo.json"
    if not path.is_file():
        pytest.skip("../shared is absent: glaive_toolcall_zh_demo.json is in ../shared/data/llamafactory")
    tokenizer = get(tokenizers, name)
    rows = load_rows({"path": str(path), "format": "sharegpt", "field_map": None, "split": "train", "name": "g"},
                     None, Problems("skip"))[:50]
    raw = json.loads(path.read_text(encoding="utf-8"))
    encode, calls = RowEncoder(tokenizer, MASKING), 0
    for row in rows:
        source = raw[int(row["id"].rsplit("-", 1)[1]) - 1]
        messages = []
        for turn in source["conversations"]:
            if turn["from"] == "function_call":
                call = json.loads(turn["value"])
                messages.append({"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {
                    "name": call["name"], "arguments": call["arguments"]}}]})
                calls += 1
            else:
                role = {"human": "user", "gpt": "assistant", "observation": "tool"}[turn["from"]]
                messages.append({"role": role, "content": turn["value"]})
        tools = [{"type": "function", "function": t} for t in json.loads(source["tools"])] or None  # "[]": none
        [encoded] = encode(row)
        assert encoded.input_ids == tokenizer.apply_chat_template(messages, tools=tools, tokenize=True)["input_ids"]
        assert '"arguments": "{' not in tokenizer.decode(encoded.input_ids)
    assert calls >= 30


def training_rows(path: Path) -> Path:
    """40 distinct conversations of the fixed kinds (numbers varied), as a messages JSONL file."""
    lines = []
    for i in range(8):
        for kind, (messages, tools) in CONVERSATIONS.items():
            varied = json.loads(json.dumps(messages).replace("2", str(i + 2)))
            lines.append(json.dumps({"messages": varied, "tools": tools, "id": f"{kind}-{i}"}) + "\n")
    path.write_text("".join(lines), encoding="utf-8")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("name", PRESETS)
def test_each_preset_trains_ten_steps_on_a_random_init_model_of_its_architecture_and_exports(name, tokenizers,
                                                                                               tmp_path):
    tokenizer = get(tokenizers, name)
    preset = PRESETS[name]
    folder = Path(tokenizer.name_or_path)
    config = {**SMALL, **preset.architecture, "vocab_size": len(tokenizer)}
    run_dir = tmp_path / "run"
    args = [f"hydra.run.dir={run_dir}", f"model={name}", "model.name_or_path=null", f"model.tokenizer={folder}",
            *([f"model.chat_template={preset.template}"] if preset.template else []),
            "model.config={" + ",".join(f"{k}:{v}" for k, v in config.items()) + "}",
            "model.dtype=float32", "model.attn_implementation=sdpa", "model.train_in_full=null",
            "data=local", f"data.path={training_rows(tmp_path / 'rows.jsonl')}", "data.min_val_size=4",
            "trainer.max_steps=10", "trainer.packing=false", "trainer.per_device_train_batch_size=4",
            "trainer.max_length=1024", "trainer.eval_steps=10", "trainer.logging_steps=1", "trainer.save_steps=1000",
            "optim.learning_rate=1e-3", "eval.before_training=false", "eval.max_samples=2", "eval.max_new_tokens=4",
            "eval.general_path=null", "eval.probes=[]"]
    assert run_cli(*args) == 0
    run = RunDir(run_dir)
    losses = [e["loss"] for e in json.loads(run.log_history.read_text()) if "loss" in e]
    assert len(losses) == 10 and all(loss == loss and loss > 0 for loss in losses)
    assert export_cli([f"run_dir={run_dir}"]) == 0
    merged = json.loads((run.merged / "config.json").read_text())
    assert merged["model_type"] == preset.architecture["model_type"] and merged["vocab_size"] == len(tokenizer)
    exported = AutoTokenizer.from_pretrained(run.merged)
    messages = CONVERSATIONS["single"][0][:1]
    assert exported.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == \
        tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, enable_thinking=False)
