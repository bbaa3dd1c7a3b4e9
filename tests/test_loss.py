"""The trained-positions loss (loss.py, Trainer.compute_loss): the model's own cross-entropy and gradients, to float
rounding, without the full logits -- unit-level on a LoRA and a fully trained model, then a real run's loss curve
against TRL's own loss."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM, set_seed

from sft_sweep import loss
from sft_sweep.recipe import setup
from sft_sweep.run_dir import RunDir
from sft_sweep.trainer import Trainer
from tests.helpers import TINY, plain


def model_and_batch(tie: bool, lora: bool):
    torch.manual_seed(0)
    config = AutoConfig.for_model("qwen3", vocab_size=5000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=tie)
    model = AutoModelForCausalLM.from_config(config)
    if lora:  # (LoRA B starts non-zero: every adapter weight gets a gradient to compare)
        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    ids = torch.randint(0, 5000, (3, 20))
    labels = ids.clone()
    labels[:, :7] = -100  # the prompt
    labels[2, 15:] = -100  # padding
    mask = torch.ones_like(ids)
    mask[2, 15:] = 0
    return model, {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("tie, lora", [(True, True), (False, False)])
def test_the_loss_and_gradients_are_the_models_own(tie, lora, monkeypatch):
    monkeypatch.setattr(loss, "CHUNK_ELEMENTS", 5000 * 7)  # several chunks of trained positions
    model, batch = model_and_batch(tie, lora)
    n_items = int((batch["labels"][:, 1:] != -100).sum())
    reference = model(**batch, num_items_in_batch=n_items).loss  # full logits, the model's cross-entropy
    reference.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    nll, count = loss.nll_sum(model, batch)
    (nll / n_items).backward()
    assert count == n_items == 34
    assert (nll / n_items).item() == pytest.approx(reference.item(), rel=1e-5)
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert torch.allclose(p.grad, expected[name], rtol=1e-4, atol=1e-7), name
    with torch.no_grad():  # evaluation: the same number, no gradient made
        assert loss.nll_sum(model, batch)[0].item() == pytest.approx(nll.item(), rel=1e-6)


@pytest.mark.slow
def test_a_run_trains_the_same_loss_curve_as_with_trls_loss(tmp_path):
    """20 steps of the tiny LoRA run, logging every step: ours against the parent class's (TRL's) compute_loss."""
    curves = {}
    for name in ("ours", "trl"):
        set_seed(42)  # as a run does first: the same LoRA initialization for both
        trainer, _ = setup(plain(*TINY, "trainer.max_steps=20", "trainer.logging_steps=1", "trainer.eval_steps=10",
                                 "eval.enabled=false"), RunDir(tmp_path / name))
        if name == "trl":
            trainer.compute_loss = super(Trainer, trainer).compute_loss
        trainer.train()
        curves[name] = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        curves[name + "_eval"] = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h]
    assert len(curves["ours"]) == 20
    assert max(abs(a - b) / abs(b) for a, b in zip(curves["ours"], curves["trl"])) <= 1e-5
    assert curves["ours_eval"] == pytest.approx(curves["trl_eval"], rel=1e-5)
