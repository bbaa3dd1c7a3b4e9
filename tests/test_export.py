"""Exports serve what the run trained on: the exported template's default render equals the run's evaluation
prompt (the tiny model's template, the real Qwen3 one, a Llama-style one), generation_config.json and the model card,
portable adapters, GGUF through llama.cpp's own converter (same weights, same tokenization), the Ollama Modelfile."""

import glob
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from sft_sweep import trained
from sft_sweep.config import asset_path
from sft_sweep.export import main as export_cli
from sft_sweep.export import ollama_template, with_defaults
from sft_sweep.masking import end_of_turn_token
from sft_sweep.run_dir import RunDir
from tests.helpers import REPO, SHARED

CONVERSATIONS = [
    [{"role": "user", "content": "Calculate 1+1-1"}],
    [{"role": "system", "content": "You answer in JSON."},
     {"role": "user", "content": "Classify: The pizza was great."}],
    [{"role": "user", "content": "Ben has 5 cards and gets 2 more. How many cards does Ben have now?"},
     {"role": "assistant", "content": "7"}, {"role": "user", "content": "What is that times 2?"}],
]


def tokenizers():
    """(name, tokenizer) for the three template families the test covers; Qwen3's real one needs ../shared."""
    yield "tiny", AutoTokenizer.from_pretrained(asset_path("tiny_tokenizer"))
    qwen3 = SHARED / "data" / "tokenizers" / "qwen3"
    yield "qwen3", AutoTokenizer.from_pretrained(qwen3) if qwen3.is_dir() else None
    llama = AutoTokenizer.from_pretrained(asset_path("tiny_tokenizer"))
    llama.chat_template = Path(asset_path("chat_templates/llama2.jinja")).read_text(encoding="utf-8")
    yield "llama2", llama


@pytest.mark.parametrize("name, tokenizer", list(tokenizers()), ids=lambda x: x if isinstance(x, str) else "")
def test_the_exported_templates_default_prompt_is_the_evaluation_prompt(name, tokenizer):
    if tokenizer is None:
        pytest.skip(f"../shared is absent: the real {name} tokenizer is in ../shared/data/tokenizers")
    defaults = {"enable_thinking": False} if "enable_thinking" in tokenizer.chat_template else {}
    exported = with_defaults(tokenizer.chat_template, defaults)
    for conversation in CONVERSATIONS:
        # the run's evaluation path: generation.generate renders with eval.enable_thinking (false) passed
        evaluated = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True,
                                                  enable_thinking=False)
        served = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True,
                                               chat_template=exported)
        assert tokenizer(served, add_special_tokens=False)["input_ids"] == tokenizer(
            evaluated, add_special_tokens=False)["input_ids"]
        # an explicit argument still wins over the default
        thinking = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True,
                                                 enable_thinking=True)
        assert tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True,
                                             chat_template=exported, enable_thinking=True) == thinking
        # and without the export's defaults a server would have asked another prompt (thinking templates only)
        plain = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        assert (plain != evaluated) == bool(defaults)
    if name != "llama2":
        assert "<think>\n\n</think>\n\n" in served  # thinking off, as trained and evaluated


def go_render(template: str, messages: list[dict], tmp_path) -> str:
    """Render an Ollama TEMPLATE with Go's own text/template (what Ollama uses), given Ollama's .Messages."""
    program = tmp_path / "render.go"
    program.write_text('''package main
import ("encoding/json"; "os"; "text/template")
type Message struct { Role string `json:"role"`; Content string `json:"content"` }
func main() {
    text, _ := os.ReadFile(os.Args[1])
    var messages []Message
    json.Unmarshal([]byte(os.Args[2]), &messages)
    t := template.Must(template.New("t").Parse(string(text)))
    if err := t.Execute(os.Stdout, map[string]any{"Messages": messages}); err != nil { panic(err) }
}
''')
    (tmp_path / "template.txt").write_text(template)
    env = {**os.environ, "GOCACHE": str(tmp_path / "gocache"), "GOPATH": str(tmp_path / "gopath"), "GO111MODULE": "off"}
    return subprocess.run(["go", "run", str(program), str(tmp_path / "template.txt"), json.dumps(messages)],
                          capture_output=True, text=True, check=True, env=env).stdout


@pytest.mark.skipif(shutil.which("go") is None, reason="Go is not installed (apt-get install golang-go): it renders "
                                                        "the Ollama template as Ollama does")
@pytest.mark.parametrize("name, tokenizer", [t for t in tokenizers() if t[0] != "llama2"],
                         ids=lambda x: x if isinstance(x, str) else "")
def test_the_ollama_template_renders_the_evaluation_prompt_in_go(name, tokenizer, tmp_path):
    if tokenizer is None:
        pytest.skip(f"../shared is absent: the real {name} tokenizer is in ../shared/data/tokenizers")
    tokenizer.chat_template = with_defaults(tokenizer.chat_template, {"enable_thinking": False})
    template = ollama_template(tokenizer)
    for conversation in CONVERSATIONS:
        assert go_render(template, conversation, tmp_path) == tokenizer.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=True, enable_thinking=False)


def test_the_ollama_template_refuses_a_template_that_is_not_chatml(tmp_path):
    from sft_sweep.errors import UserError

    [(_, llama)] = [t for t in tokenizers() if t[0] == "llama2"]
    with pytest.raises(UserError, match="format=ollama writes a TEMPLATE for ChatML chat templates"):
        ollama_template(llama)


# --- a real run, exported ------------------------------------------------------------------------------------
@pytest.fixture
def run(tiny_run):
    return tiny_run


@pytest.mark.slow
def test_the_export_names_its_prompt_its_stop_tokens_and_its_commands(run):
    assert export_cli([f"run_dir={run}"]) == 0
    merged = run / "merged"
    tokenizer = AutoTokenizer.from_pretrained(merged)
    eot = end_of_turn_token(tokenizer)
    generation = json.loads((merged / "generation_config.json").read_text())
    assert generation["do_sample"] is False and tokenizer.convert_ids_to_tokens(generation["eos_token_id"]) == [eot]
    card = (merged / "README.md").read_text()
    assert "`enable_thinking=false`" in card and f"`{eot}`" in card
    assert f"python -m sft_sweep.export run_dir={run}" in card and "python -m sft_sweep" in card
    metrics = json.loads((run / "metrics.json").read_text())
    assert f"| eval_loss | {metrics['eval_loss']:.4g} |" in card
    # the exported tokenizer's plain render is the evaluation's prompt
    conversation = CONVERSATIONS[0]
    assert tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False) == \
        AutoTokenizer.from_pretrained(run / "adapter").apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=False, enable_thinking=False)


@pytest.mark.slow
def test_a_copied_run_dirs_adapter_loads_with_plain_peft(run, tmp_path, monkeypatch):
    from peft import AutoPeftModelForCausalLM, PeftModel

    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "../base_model"  # beside the adapter, not this machine's path
    copy = tmp_path / "elsewhere"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("checkpoints"))
    base = AutoModelForCausalLM.from_pretrained(copy / "base_model", dtype=torch.float32)
    model = PeftModel.from_pretrained(base, copy / "adapter").eval()
    ours, _ = trained.load(RunDir(run), "float32")
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ours(ids).logits)
    monkeypatch.chdir(copy / "adapter")  # the base named relative to the adapter: PEFT alone finds it from there
    alone = AutoPeftModelForCausalLM.from_pretrained(".", dtype=torch.float32).eval()
    with torch.no_grad():
        assert torch.equal(alone(ids).logits, ours(ids).logits)


def llama_cpp_converter() -> str | None:
    """llama.cpp's converter: $SFT_SWEEP_LLAMA_CPP, else the llama-cpp-python sdist .ci/run downloads."""
    found = os.environ.get("SFT_SWEEP_LLAMA_CPP") or next(iter(sorted(glob.glob(os.path.expanduser(
        "~/.cache/sft-sweep/llama-cpp/llama_cpp_python-*.tar.gz")))), None)
    return found


@pytest.mark.slow
@pytest.mark.skipif(llama_cpp_converter() is None, reason="llama.cpp's converter is absent: pip download --no-deps "
                    "--no-binary :all: llama-cpp-python -d ~/.cache/sft-sweep/llama-cpp (.ci/run does)")
def test_gguf_holds_the_merged_weights_and_tokenizes_as_the_model(run, tmp_path):
    from gguf import GGUFReader

    assert export_cli([f"run_dir={run}", "format=ollama", f"converter={llama_cpp_converter()}", "outtype=f32"]) == 0
    gguf = run / "gguf" / "model-f32.gguf"
    reader = GGUFReader(gguf)
    fields = {f.name: f for f in reader.fields.values()}
    assert bytes(fields["tokenizer.ggml.pre"].parts[-1]).decode() == "gpt-2"
    merged = AutoModelForCausalLM.from_pretrained(run / "merged", dtype=torch.float32).state_dict()
    tensors = {t.name: torch.from_numpy(t.data.copy()) for t in reader.tensors}
    assert len(tensors) == len(merged)
    assert torch.equal(tensors["token_embd.weight"].reshape(merged["model.embed_tokens.weight"].shape),
                       merged["model.embed_tokens.weight"])
    assert torch.equal(tensors["blk.0.attn_q.weight"].reshape(merged["model.layers.0.self_attn.q_proj.weight"].shape),
                       merged["model.layers.0.self_attn.q_proj.weight"])
    # the GGUF's vocabulary is the tokenizer's, id for id, special tokens included
    tokenizer = AutoTokenizer.from_pretrained(run / "merged")
    tokens = [bytes(fields["tokenizer.ggml.tokens"].parts[i]).decode() for i in fields["tokenizer.ggml.tokens"].data]
    assert tokens[:len(tokenizer)] == tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    # transformers builds a tokenizer from the GGUF alone (its tokens and merges): the same ids, Chinese included
    from_gguf = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    texts = ["<|im_start|>user\nCalculate 12+30<|im_end|>\n", "这家餐厅的服务很好, apple工作1314 ok!", "It's   x\n\n"]
    for text in texts:
        assert from_gguf(text, add_special_tokens=False)["input_ids"] == tokenizer(text, add_special_tokens=False)[
            "input_ids"]
    eos = int(fields["tokenizer.ggml.eos_token_id"].parts[-1][0])
    assert tokenizer.convert_ids_to_tokens(eos) == end_of_turn_token(tokenizer)
    config = AutoConfig.from_pretrained(run / "merged")
    assert fields["qwen3.attention.key_length"].parts[-1][0] == config.head_dim
    assert fields["qwen3.attention.head_count"].parts[-1][0] == config.num_attention_heads
    # transformers reads the GGUF's weights back (it takes no head size from a GGUF: the merged config gives it):
    # the same logits
    back = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, config=config,
                                                dtype=torch.float32).eval()
    ids = tokenizer.apply_chat_template(CONVERSATIONS[2], add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    original = AutoModelForCausalLM.from_pretrained(run / "merged", dtype=torch.float32).eval()
    with torch.no_grad():
        assert torch.allclose(back(ids).logits, original(ids).logits, atol=1e-5)
    modelfile = (run / "gguf" / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model-f32.gguf\nTEMPLATE \"\"\"") and 'PARAMETER stop "<|im_end|>"' in modelfile


def test_gguf_without_a_converter_is_one_line(tmp_path, capsys):
    assert export_cli([f"run_dir={tmp_path}", "format=gguf"]) == 2
    assert capsys.readouterr().err == (
        "error: format=gguf needs llama.cpp's converter: pass converter=<llama.cpp's convert_hf_to_gguf.py, a "
        "llama.cpp checkout, or the llama-cpp-python sdist: pip download --no-deps --no-binary :all: "
        "llama-cpp-python>\n")
    assert not (tmp_path / "merged").exists()
    # an outtype the converter does not write: refused before the merge, too
    assert export_cli([f"run_dir={tmp_path}", "format=gguf", "converter=x", "outtype=q4"]) == 2
    assert capsys.readouterr().err == "error: outtype=q4: one of f16, bf16, f32, q8_0\n"
    assert not (tmp_path / "merged").exists()


def test_the_tiny_tokenizers_pre_tokenizer_is_one_llama_cpp_implements():
    """GPT-2's byte-level regex ("gpt-2" in llama.cpp), and no merge of its vocabulary joins a multi-byte character
    to its neighbour: the CJK-isolating split it was trained with changes no text's tokens."""
    import importlib.util

    from tokenizers import Tokenizer

    spec = importlib.util.spec_from_file_location("make_tiny_tokenizer", REPO / "scripts" / "make_tiny_tokenizer.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    tokenizer = Tokenizer.from_file(str(Path(asset_path("tiny_tokenizer")) / "tokenizer.json"))
    assert json.loads(tokenizer.to_str())["pre_tokenizer"] == {
        "type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    assert script.cross_character_merges(tokenizer) == []
