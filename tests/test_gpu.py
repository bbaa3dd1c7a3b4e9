"""On CUDA only (skipped elsewhere): bf16 LoRA, QLoRA and its memory, packed-sample isolation per attention
kernel, and the fast adapter path against the reference. CI has no GPU; run with `python -m pytest -m gpu`."""

import gc
import importlib.util

import pytest
import torch

from sft_sweep.model import build_model, materialize_random_init
from sft_sweep.packing import BlockDiagonalCollator
from sft_sweep.recipe import setup
from sft_sweep.run_dir import RunDir
from tests.helpers import TINY, plain
from tests.test_packing import packed_and_alone_losses, packed_rows, with_labels

pytestmark = [pytest.mark.gpu, pytest.mark.slow]

# A model whose linear layers dominate its memory, like Qwen3-4B's (the tiny tokenizer keeps the vocabulary small).
WIDE = ["model.config.hidden_size=2048", "model.config.intermediate_size=6144", "model.config.num_hidden_layers=8",
        "model.config.num_attention_heads=16", "model.config.num_key_value_heads=8", "model.config.head_dim=128",
        "model.train_in_full=null", "model.dtype=auto"]


def evals(trainer) -> list[float]:
    return [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h]


def free(*objects):
    del objects
    gc.collect()
    torch.cuda.empty_cache()


def test_bf16_lora_steps_lower_the_loss(tmp_path):
    trainer, _ = setup(plain(*TINY, "model.dtype=auto", "trainer.max_steps=20", "trainer.eval_steps=10"),
                       RunDir(tmp_path))
    assert trainer.args.bf16 and trainer.model.device.type == "cuda"
    assert {p.dtype for n, p in trainer.model.named_parameters() if "lora_" not in n and "modules" not in n} == {
        torch.bfloat16}
    trainer.train()
    first, *_, last = evals(trainer)
    assert last < first


def peak_training_memory(overrides: list[str], tmp_path) -> dict:
    """One setting alone: nothing of an earlier measurement is alive while this one trains. Returns its peak
    GPU memory, its final training loss and its 4-bit layers' quantization types."""
    import bitsandbytes as bnb

    free()
    torch.cuda.reset_peak_memory_stats()
    trainer, _ = setup(plain(*TINY, *WIDE, *overrides, "trainer.max_steps=4", "trainer.eval_strategy=no",
                             "trainer.eval_on_start=false", "trainer.save_strategy=no"), RunDir(tmp_path))
    output = trainer.train()
    measured = {"peak": torch.cuda.max_memory_allocated(), "loss": output.training_loss,
                "nf4": [m.weight.quant_state.quant_type for m in trainer.model.modules()
                        if isinstance(m, bnb.nn.Linear4bit)]}
    trainer.model.cpu()
    del trainer, output
    free()
    return measured


def test_qlora_has_4bit_layers_trains_and_needs_at_most_half_the_memory_of_bf16_lora(tmp_path):
    lora = peak_training_memory([], tmp_path / "lora")
    assert torch.cuda.memory_allocated() < 0.05 * lora["peak"]  # nothing of it is left when QLoRA is measured
    qlora = peak_training_memory(["lora=qlora"], tmp_path / "qlora")
    assert qlora["nf4"] == ["nf4"] * (8 * 7) and torch.isfinite(torch.tensor(qlora["loss"]))
    assert qlora["peak"] <= 0.5 * lora["peak"], (qlora["peak"] / 2**20, lora["peak"] / 2**20)


ATTENTION = ["sdpa", "eager"] + (["flash_attention_2"] if importlib.util.find_spec("flash_attn") else [])


@pytest.mark.parametrize("attn", ATTENTION)
def test_packed_samples_stay_apart_on_cuda(attn, tok, sample_rows, tmp_path):
    """In float32 with TF32 off, so the comparison is of semantics, not rounding: 1e-4. (In bf16 the packed and
    one-by-one paths round differently, up to ~5e-2 on a loss of ~7; that would hide a leak of that size.)"""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    c = {**plain()["model"], "attn_implementation": attn, "dtype": "float32"}
    model = build_model(c, None, str(materialize_random_init(c, tok, tmp_path))).cuda().eval()
    packed = packed_rows(tok, sample_rows)
    batch = {k: v.cuda() for k, v in BlockDiagonalCollator(tok.pad_token_id, attn)(with_labels(packed)).items()}
    if attn.startswith("flash"):  # position ids alone keep the samples apart (TRL's padding-free path)
        batch.pop("attention_mask")
    packed_losses, alone_losses = packed_and_alone_losses(model, batch, packed, device="cuda")
    assert packed_losses.shape == alone_losses.shape and packed_losses.numel() > 60
    assert (packed_losses - alone_losses).abs().max() < 1e-4


def test_adapters_in_the_base_dtype_train_like_float32_adapters(tmp_path):
    """The fast path (no per-layer casts) against PEFT's default: the same losses up to bf16 rounding."""
    runs = {}
    for autocast in (True, False):
        overrides = plain(*TINY, "model.dtype=auto", "trainer.max_steps=6", "trainer.eval_steps=3",
                          f"lora.autocast_adapter_dtype={str(autocast).lower()}")
        trainer, _ = setup(overrides, RunDir(tmp_path / str(autocast)))
        trainer.train()
        runs[autocast] = evals(trainer)
        free(trainer)
    assert runs[True][0] == pytest.approx(runs[False][0], abs=1e-3)  # before any step: the same model
    for reference, fast in zip(runs[True][1:], runs[False][1:]):
        assert fast == pytest.approx(reference, abs=5e-2)
