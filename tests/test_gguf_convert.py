"""The GGUF converter step (sft_sweep/gguf_convert.py) on its own: which tokenizers it names GPT-2's byte-level
pre-tokenizer, and that llama.cpp's own answer (or error) stands for every other. The whole conversion, through
llama.cpp's converter, is tests/test_export.py's GGUF round trip."""

import pytest

from sft_sweep.config import asset_path
from sft_sweep.gguf_convert import is_gpt2_pre_tokenizer, name_gpt2_pre_tokenizer
from tests.helpers import SHARED


def test_the_tiny_tokenizer_is_gpt2_byte_level_and_qwen3s_is_not(tmp_path):
    assert is_gpt2_pre_tokenizer(asset_path("tiny_tokenizer"))
    assert not is_gpt2_pre_tokenizer(tmp_path)  # no tokenizer.json
    qwen3 = SHARED / "data" / "tokenizers" / "qwen3"
    if not qwen3.is_dir():
        pytest.skip("../shared is absent: the real Qwen3 tokenizer is in ../shared/data/tokenizers")
    assert not is_gpt2_pre_tokenizer(qwen3)  # a Split regex of its own, which llama.cpp names "qwen2" by hash


def test_llama_cpps_answer_stands_and_only_an_unknown_gpt2_tokenizer_is_named_by_us(tmp_path):
    def text_model():
        class TextModel:  # llama.cpp's interface: a name from the ids' hash, NotImplementedError when it has none
            answer = None

            def get_vocab_base_pre(self, tokenizer):
                if self.answer is None:
                    raise NotImplementedError("BPE pre-tokenizer was not recognized")
                return self.answer

        return TextModel

    TextModel = text_model()
    name_gpt2_pre_tokenizer(TextModel, asset_path("tiny_tokenizer"))
    assert TextModel().get_vocab_base_pre(None) == "gpt-2"
    TextModel.answer = "qwen2"
    assert TextModel().get_vocab_base_pre(None) == "qwen2"  # a known hash: llama.cpp's name

    Other = text_model()
    name_gpt2_pre_tokenizer(Other, tmp_path)  # not GPT-2's pre-tokenizer: llama.cpp's error stands
    with pytest.raises(NotImplementedError):
        Other().get_vocab_base_pre(None)
