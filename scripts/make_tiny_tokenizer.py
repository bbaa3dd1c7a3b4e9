"""Train and write the embedded tiny model's tokenizer: `sft_sweep/assets/tiny_tokenizer/`.

    python scripts/make_sample_data.py && python scripts/make_tiny_tokenizer.py

A byte-level BPE (so any UTF-8 text, Chinese included, encodes without unknowns)
trained on the bundled sample data as the chat template renders it, plus the
ChatML special tokens; its pre-tokenizer is GPT-2's (llama.cpp's "gpt-2", for the
GGUF export). Deterministic: the same data gives the same files.
"""

import json
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "sft_sweep" / "assets"
OUT = ASSETS / "tiny_tokenizer"
VOCAB_SIZE = 2048
# Qwen3's special tokens (the ones the template and tool calls need).
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
ADDED = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]


def rendered_texts(template: str):
    # Render each row with the real template so merges reflect what training sees.
    bootstrap = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE()), chat_template=template)
    with (ASSETS / "sample" / "chat.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            yield bootstrap.apply_chat_template(row["messages"], tools=row.get("tools"), tokenize=False)


def cross_character_merges(tok: Tokenizer) -> list[tuple[bytes, bytes]]:
    """Merges that join a multi-byte (non-ASCII) character to the character beside it."""
    merges = json.loads(tok.to_str())["model"]["merges"]
    out = []
    for merge in merges:
        left, right = (merge.split(" ") if isinstance(merge, str) else merge)
        a, b = _bytes(left), _bytes(right)
        if not 0x80 <= b[0] <= 0xBF and (a[-1] >= 0x80 or b[0] >= 0x80):  # b starts a character next to a's
            out.append((a, b))
    return out


def _byte_level_map() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the printable character standing for each byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[chr(byte)] = byte
        else:
            chars[chr(256 + extra)] = byte
            extra += 1
    return chars


_BYTES = _byte_level_map()


def _bytes(token: str) -> bytes:
    return bytes(_BYTES[c] for c in token)


def main():
    template = (ASSETS / "chat_templates" / "chatml_qwen3_style.jinja").read_text(encoding="utf-8")
    tok = Tokenizer(models.BPE())
    # Each CJK character (and full-width punctuation) is its own pre-token: on data this small and
    # repetitive, BPE would otherwise merge whole Chinese phrases ("the service was boring") into one
    # token, and a tiny model can only learn what such a token means from that exact phrase.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex("[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL + ADDED,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(rendered_texts(template), trainer=trainer)
    # Trained that way, no merge joins a multi-byte character to its neighbour, so GPT-2's byte-level regex alone
    # splits every text into the same tokens -- and GPT-2's is a pre-tokenizer llama.cpp implements ("gpt-2"):
    # the GGUF export tokenizes as the model does. Checked here, so a retrained vocabulary cannot break it.
    assert not cross_character_merges(tok), cross_character_merges(tok)[:5]
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=ADDED,
        chat_template=template,
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
    )
    OUT.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(OUT)
    print(f"wrote tokenizer ({len(hf)} tokens) to {OUT}")


if __name__ == "__main__":
    main()
