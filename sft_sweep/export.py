"""Export a finished run for serving: the prompt a server asks is the prompt the model was trained on.

    python -m sft_sweep.export run_dir=outputs/runs/<run> [dtype=float32] [format=hf|gguf|ollama]
        [converter=<llama.cpp's convert_hf_to_gguf.py | a llama.cpp checkout | the llama-cpp-python sdist>]
        [outtype=f16|bf16|f32|q8_0]

format=hf (the default) writes <run>/merged/: the LoRA adapter merged into its base (a full fine-tuning run's
model as it is), safetensors, and the tokenizer, with
  - the chat template given the run's evaluation settings as its defaults (thinking off when the run evaluated
    with thinking off), so a server that applies the model's own template (vLLM, TGI, Ollama, transformers)
    asks the prompt the run trained and evaluated on;
  - generation_config.json: the end-of-turn token as a stop (eos) token, greedy as the run evaluated;
  - README.md: a model card naming the template, its defaults, the stop tokens, the metrics and the commands.
format=gguf also writes <run>/gguf/model-<outtype>.gguf with llama.cpp's own converter (pip download --no-deps
--no-binary :all: llama-cpp-python fetches it; it needs sentencepiece); format=ollama also writes
<run>/gguf/Modelfile (FROM the GGUF, the training prompt as its TEMPLATE, the stop tokens).
For QLoRA the base is reloaded unquantized before merging (merging into 4-bit weights would round).
"""

import importlib.util
import json
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

from sft_sweep import load_test, trained
from sft_sweep import metric_names as names
from sft_sweep.config import parse_cli_args
from sft_sweep.console import cli_logging
from sft_sweep.errors import UserError, one_line_errors
from sft_sweep.run_dir import RunDir, read_json

FORMATS = ("hf", "gguf", "ollama")
OUTTYPES = ("f16", "bf16", "f32", "q8_0")


# --- the prompt: the run's template settings as the exported template's defaults ---------------------------
def with_defaults(template: str, defaults: dict) -> str:
    """The template with `defaults` set where the caller passes nothing: apply_chat_template(messages) then renders
    as apply_chat_template(messages, **defaults) did, and an explicit keyword still wins."""
    head = "".join(f"{{%- if {key} is not defined %}}{{%- set {key} = {json.dumps(value)} %}}{{%- endif %}}"
                   for key, value in defaults.items())
    note = "{#- sft-sweep export: the run's chat-template settings as defaults (the prompt it was trained on) -#}\n"
    return note + head + "\n" + template if defaults else template


def stop_tokens(tokenizer) -> list[str]:
    """The tokens that end an answer: the template's end-of-turn token (<|im_end|>), then the tokenizer's eos."""
    from sft_sweep.masking import end_of_turn_token

    eot = end_of_turn_token(tokenizer)
    return list(dict.fromkeys(t for t in (eot, tokenizer.eos_token) if t))


def generation_config(tokenizer):
    """Greedy (as the run's evaluation answered), stopping at the end of the turn."""
    from transformers import GenerationConfig

    return GenerationConfig(do_sample=False, eos_token_id=tokenizer.convert_tokens_to_ids(stop_tokens(tokenizer)),
                            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)


# --- format=hf ------------------------------------------------------------------------------------------------
def export(run_dir: RunDir, dtype: str = "auto") -> Path:
    """<run>/merged/: weights, tokenizer with the training prompt as its default, generation config, model card."""
    model, tokenizer = trained.load(run_dir, dtype)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    defaults = trained.template_kwargs(run_dir, tokenizer.chat_template or "")
    tokenizer.chat_template = with_defaults(tokenizer.chat_template, defaults)
    model.generation_config = generation_config(tokenizer)
    out = run_dir.merged
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "README.md").write_text(model_card(run_dir, model, tokenizer, defaults), encoding="utf-8")
    return out


def model_card(run_dir: RunDir, model, tokenizer, defaults: dict) -> str:
    manifest = read_json(run_dir.manifest) if run_dir.manifest.is_file() else {}
    metrics = run_dir.read_metrics()
    base = manifest.get("config", {}).get("model", {}).get("name_or_path") or "a random-init model built from a " \
        "config (its weights: the run's base_model/)"
    shown = {k: metrics[k] for k in (names.EVAL_LOSS, names.PERPLEXITY, names.EXACT_MATCH, names.JSON_VALIDITY,
                                     names.USABILITY, names.N_SAMPLES) if isinstance(metrics.get(k), (int, float))}
    shown.update({f"{names.EXACT_MATCH} ({kind})": v for kind, v in
                  (metrics.get(names.EXACT_MATCH_BY_TAG) or {}).items()})
    stops = stop_tokens(tokenizer)
    where = shlex.quote(str(run_dir.path))
    settings = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in defaults.items()) or "none"
    lines = [
        "---", "library_name: transformers", "pipeline_tag: text-generation", "tags: [sft-sweep, sft]", "---", "",
        f"# {run_dir.path.name}", "",
        f"Fine-tuned with sft-sweep (TRL's SFTTrainer) from {base}, "
        f"{model.config.model_type} architecture, {sum(p.numel() for p in model.parameters()):,} parameters; "
        f"the adapter merged into its base.", "",
        "## Prompt", "",
        "The chat template (`chat_template.jinja`) is the one the run trained and evaluated with. Its defaults are "
        f"the run's evaluation settings ({settings}): `apply_chat_template(messages, add_generation_prompt=True)` "
        "with no other argument renders exactly the prompt the model was trained to answer; an explicit argument "
        "still overrides them.", "",
        f"Stop tokens: {', '.join(f'`{t}`' for t in stops)} (ids {tokenizer.convert_tokens_to_ids(stops)}, the "
        "`eos_token_id` of `generation_config.json`). Generation defaults: greedy (`do_sample: false`), as the "
        "run's evaluation answered; pass a temperature to sample.", "",
        "## Evaluation (the run's own, greedy)", "",
        "| metric | value |", "|---|---|",
        *[f"| {k} | {v:.4g} |" for k, v in shown.items()], "",
        *([load_test.card_section(read_json(run_dir.load_test))] if run_dir.load_test.is_file() else []),
        "## How it was made", "",
        "Training:", "", f"    {manifest.get('command') or '(no manifest)'}", "",
        "Export:", "", f"    python -m sft_sweep.export run_dir={where}", "",
        "## Serve", "",
        f"    python -m sft_sweep.serve run_dir={where}        # vLLM when installed, else transformers", "",
        "or any OpenAI-compatible server on this folder (the defaults above apply), e.g.", "",
        f"    python -m vllm.entrypoints.openai.api_server --model {shlex.quote(str(run_dir.merged))} "
        "--override-generation-config '{\"temperature\": 0}'", "",
    ]
    return "\n".join(lines)


# --- format=gguf / ollama -------------------------------------------------------------------------------------


def find_converter(spec: str | None) -> Path:
    """llama.cpp's convert_hf_to_gguf.py from `converter=`: the script, a llama.cpp checkout, or the
    llama-cpp-python sdist (a .tar.gz, or its unpacked folder: the script is under vendor/llama.cpp)."""
    how = ("pass converter=<llama.cpp's convert_hf_to_gguf.py, a llama.cpp checkout, or the llama-cpp-python sdist: "
           "pip download --no-deps --no-binary :all: llama-cpp-python>")
    if not spec:
        raise UserError(f"format=gguf needs llama.cpp's converter: {how}")
    path = Path(spec).expanduser()
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        path = unpack_sdist(path)
    for candidate in (path, path / "convert_hf_to_gguf.py", path / "vendor" / "llama.cpp" / "convert_hf_to_gguf.py"):
        if candidate.is_file() and candidate.name == "convert_hf_to_gguf.py":
            return candidate.resolve()
    raise UserError(f"converter={spec}: no convert_hf_to_gguf.py there; {how}")


def unpack_sdist(sdist: Path) -> Path:
    """The converter's files (the script, its conversion/ package, gguf-py/) from the sdist, unpacked once beside
    it (<sdist without .tar.gz>/vendor/llama.cpp/)."""
    root = sdist.parent / sdist.name.removesuffix(".tar.gz").removesuffix(".tgz")
    script = root / "vendor" / "llama.cpp" / "convert_hf_to_gguf.py"
    if script.is_file():
        return root
    wanted = ("vendor/llama.cpp/convert_hf_to_gguf.py", "vendor/llama.cpp/conversion/", "vendor/llama.cpp/gguf-py/")
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if any(w in m.name for w in wanted) and (m.isfile() or m.isdir())]
        if not members:
            raise UserError(f"converter={sdist}: not the llama-cpp-python sdist (no vendor/llama.cpp/"
                            "convert_hf_to_gguf.py in it)")
        tar.extractall(sdist.parent, members=members, filter="data")
    return root


def gguf_converter(converter: str | None, outtype: str) -> Path:
    """Everything format=gguf needs, checked before the merge: the outtype, llama.cpp's converter script and the
    packages it imports (gguf comes with a llama.cpp checkout or the sdist, as gguf-py/)."""
    if outtype not in OUTTYPES:
        raise UserError(f"outtype={outtype}: one of {', '.join(OUTTYPES)}")
    script = find_converter(converter)
    needed = ["sentencepiece"] + ([] if (script.parent / "gguf-py").is_dir() else ["gguf"])
    for package in needed:
        if importlib.util.find_spec(package) is None:
            raise UserError(f"format=gguf: llama.cpp's converter needs {package}: pip install {package}")
    return script


def to_gguf(run_dir: RunDir, script: Path, outtype: str) -> Path:
    """<run>/gguf/model-<outtype>.gguf from merged/, by llama.cpp's converter `script` (from gguf_converter)."""
    out = run_dir.gguf / f"model-{outtype}.gguf"
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    # llama.cpp's converter, naming a GPT-2 byte-level pre-tokenizer it has no hash for (gguf_convert.py)
    proc = subprocess.run([sys.executable, "-m", "sft_sweep.gguf_convert", str(script), str(run_dir.merged),
                           "--outfile", str(partial), "--outtype", outtype], capture_output=True, text=True)
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise UserError(f"llama.cpp's converter failed on {run_dir.merged}: {last}")
    partial.replace(out)
    return out


def ollama_template(tokenizer) -> str:
    """The exported chat template as an Ollama (Go text/template) TEMPLATE, for ChatML templates (Qwen's): each
    message `<|im_start|>role\\ncontent<|im_end|>\\n`, then the generation prompt exactly as the exported template
    writes it (with its defaults: the empty think block when the run evaluated with thinking off). Checked against
    the template on a conversation of every role; another template family is refused in one line."""
    probe = [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"},
             {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}]
    rendered = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
    chatml = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in probe) + "<|im_start|>assistant\n"
    if not rendered.startswith(chatml):
        raise UserError("format=ollama writes a TEMPLATE for ChatML chat templates (<|im_start|>role ... <|im_end|>) "
                        "only; this model's template is another: write the Modelfile's TEMPLATE by hand")
    generation = rendered[len(chatml):]
    return ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
            f"<|im_start|>assistant\n{generation}")


def modelfile(run_dir: RunDir, gguf: Path, tokenizer) -> Path:
    """An Ollama Modelfile: FROM the GGUF, the training prompt as a Go TEMPLATE, the stop tokens, greedy."""
    lines = [f"FROM ./{gguf.name}", f'TEMPLATE """{ollama_template(tokenizer)}"""',
             *[f'PARAMETER stop "{t}"' for t in stop_tokens(tokenizer)], "PARAMETER temperature 0", ""]
    path = run_dir.gguf / "Modelfile"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@one_line_errors
def main(argv: list[str]) -> int:
    args = parse_cli_args(argv, __doc__, ("run_dir",), {"dtype": "auto", "format": "hf", "converter": None,
                                                         "outtype": "f16"})
    if args["format"] not in FORMATS:
        raise UserError(f"format={args['format']}: one of {', '.join(FORMATS)}")
    cli_logging()
    run_dir = RunDir(args["run_dir"])
    script = gguf_converter(args["converter"], args["outtype"]) if args["format"] != "hf" else None
    out = export(run_dir, args["dtype"])
    print(f"merged model written to {out}")
    if script:
        gguf = to_gguf(run_dir, script, args["outtype"])
        print(f"GGUF written to {gguf}")
        if args["format"] == "ollama":
            from transformers import AutoTokenizer

            path = modelfile(run_dir, gguf, AutoTokenizer.from_pretrained(out))
            print(f"Ollama Modelfile written to {path} (ollama create <name> -f {path})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
