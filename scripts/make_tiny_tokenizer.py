"""Train and write the embedded tiny model's tokenizer: `sft_sweep/assets/tiny_tokenizer/`.

    python scripts/make_sample_data.py && python scripts/make_tiny_tokenizer.py

A byte-level BPE (so any UTF-8 text, Chinese included, encodes without unknowns)
trained on the bundled sample data as the chat template renders it, plus the
ChatML special tokens. Deterministic: the same data gives the same files.
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
