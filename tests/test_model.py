"""The embedded tiny model and the one-line error for an unreachable hub."""

import pytest
import torch
from transformers import AutoTokenizer

from sft_sweep.errors import UserError
from sft_sweep.model import add_lora, build_model, build_tokenizer, materialize_random_init
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


def params_by_dtype(model) -> dict:
    out = {}
    for p in model.parameters():
        out[p.dtype] = out.get(p.dtype, 0) + p.numel() * p.element_size()
    return out


def test_qlora_keeps_every_non_4bit_weight_in_the_models_dtype(tmp_path):
    """peft.prepare_model_for_kbit_training would copy the embeddings, norms and head to float32."""
    import bitsandbytes as bnb
    from peft import prepare_model_for_kbit_training

    c = plain("lora=qlora", "model.dtype=bfloat16")
    path = str(materialize_random_init(c["model"], build_tokenizer(c["model"]), tmp_path))
    model = build_model(c["model"], c["lora"], path)
    assert sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules()) == 14
    kept = params_by_dtype(model)
    assert torch.float32 not in kept and kept[torch.bfloat16] > 0
    upcast = params_by_dtype(prepare_model_for_kbit_training(build_model(c["model"], c["lora"], path),
                                                             use_gradient_checkpointing=False))
    assert torch.bfloat16 not in upcast and upcast[torch.float32] == 2 * kept[torch.bfloat16]


@pytest.mark.parametrize("autocast, adapter_dtype", [(True, torch.float32), (False, torch.bfloat16)])
def test_adapter_dtype_follows_autocast_adapter_dtype(autocast, adapter_dtype, tmp_path):
    c = plain("model.dtype=bfloat16", f"lora.autocast_adapter_dtype={str(autocast).lower()}")
    path = str(materialize_random_init(c["model"], build_tokenizer(c["model"]), tmp_path))
    model = add_lora(build_model(c["model"], c["lora"], path), c["lora"])
    adapters = {p.dtype for n, p in model.named_parameters() if "lora_" in n}
    base = {p.dtype for n, p in model.named_parameters() if "lora_" not in n and "modules_to_save" not in n}
    assert adapters == {adapter_dtype} and base == {torch.bfloat16}
