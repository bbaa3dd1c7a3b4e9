"""The embedded tiny model and the one-line error for an unreachable hub."""

import pytest
from transformers import AutoTokenizer

from sft_sweep.errors import UserError
from sft_sweep.model import build_model, build_tokenizer, materialize_random_init
from tests.helpers import plain


def test_tiny_model_is_small_seeded_and_fits_the_tokenizer(tmp_path):
    c = plain()["model"]
    tok = build_tokenizer(c)
    assert {"<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>", "</tool_call>"} <= set(
        tok.get_vocab())
    a = build_model(c, None, str(materialize_random_init(c, tok, tmp_path / "a")))
    b = build_model(c, None, str(materialize_random_init(c, tok, tmp_path / "b")))
    n = sum(p.numel() for p in a.parameters())
    assert 100_000 <= n <= 2_000_000
    assert a.config.model_type == "qwen3" and a.config.vocab_size >= len(tok)
    assert all((pa == pb).all() for pa, pb in zip(a.parameters(), b.parameters()))  # init_seed fixes it
    assert AutoTokenizer.from_pretrained(tmp_path / "a").chat_template == tok.chat_template


def test_unreachable_hub_gives_one_line_error_naming_the_fix():
    c = plain("model=qwen3_4b")["model"]
    with pytest.raises(UserError) as err:
        build_tokenizer(c)
    msg = str(err.value)
    assert "\n" not in msg and "'Qwen/Qwen3-4B'" in msg and "set model.name_or_path to a local directory" in msg
    with pytest.raises(UserError, match="set model.name_or_path to a local directory"):
        build_model(c, None, c["name_or_path"])
