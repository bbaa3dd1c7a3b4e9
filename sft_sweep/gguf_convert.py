"""llama.cpp's convert_hf_to_gguf.py, run on an exported model with one thing added: the name of a GPT-2 byte-level
pre-tokenizer.

llama.cpp names a BPE tokenizer's pre-tokenizer (how text is split before merges) by a hash of the ids it gives a
fixed text, and knows only published tokenizers' hashes; for any other it raises NotImplementedError. A tokenizer
whose pre-tokenizer is exactly GPT-2's byte-level regex (the tiny model's) is what llama.cpp calls "gpt-2": said so
here, for that case only -- every other tokenizer is named by llama.cpp's own rule.

    python -m sft_sweep.gguf_convert <convert_hf_to_gguf.py> <model dir> --outfile <f.gguf> --outtype f16

(export.py runs it in a process of its own: the converter and its gguf-py are imported from the llama.cpp tree.)
"""

import json
import sys
from pathlib import Path

GPT2 = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}


def is_gpt2_pre_tokenizer(model_dir: Path) -> bool:
    """The model's tokenizer.json splits text exactly as GPT-2's byte-level pre-tokenizer does."""
    tokenizer_json = Path(model_dir) / "tokenizer.json"
    if not tokenizer_json.is_file():
        return False
    return json.loads(tokenizer_json.read_text(encoding="utf-8")).get("pre_tokenizer") == GPT2


def name_gpt2_pre_tokenizer(text_model, model_dir: Path) -> None:
    """`text_model.get_vocab_base_pre` (llama.cpp's TextModel) answers "gpt-2" where llama.cpp's own rule knows no
    name and the tokenizer is GPT-2's byte-level one; otherwise llama.cpp's answer, or its error, stands."""
    known = text_model.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer):
        try:
            return known(self, tokenizer)
        except NotImplementedError:
            if is_gpt2_pre_tokenizer(model_dir):
                return "gpt-2"
            raise

    text_model.get_vocab_base_pre = get_vocab_base_pre


def main(argv: list[str]) -> None:
    script, converter_args = Path(argv[0]), argv[1:]
    sys.path[:0] = [str(script.parent), str(script.parent / "gguf-py")]
    sys.argv = [str(script), *converter_args]
    import convert_hf_to_gguf as converter

    # TextModel lives in the script, or (newer llama.cpp) in its conversion package
    owner = next(m for m in (sys.modules.get("conversion.base"), converter) if m and hasattr(m, "TextModel"))
    name_gpt2_pre_tokenizer(owner.TextModel, Path(converter_args[0]))
    converter.main()


if __name__ == "__main__":
    main(sys.argv[1:])
