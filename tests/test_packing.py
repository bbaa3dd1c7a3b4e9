"""Packed samples never see each other, and the assistant mask survives packing and truncation."""

import logging

import pytest
import torch

from sft_sweep.checks import validate
from sft_sweep.data.tokenize import tokenize_rows
from sft_sweep.model import build_model, materialize_random_init
from sft_sweep.packing import BlockDiagonalCollator, pack
from sft_sweep.recipe import setup
from sft_sweep.run_dir import RunDir
from tests.helpers import TINY, plain, run_cli

MASKING = {"train_on": "all_assistant", "train_tool_calls": True, "thinking": True}


def with_labels(rows):
    return [{"input_ids": r["input_ids"], "seq_lengths": r["seq_lengths"],
             "labels": [t if m else -100 for t, m in zip(r["input_ids"], r["assistant_masks"])]} for r in rows]


def per_token_loss(logits, labels):
    """Loss of each trained position (label at t predicted from t-1), as the trainer computes it."""
    loss = torch.nn.functional.cross_entropy(logits[:-1], labels[1:], ignore_index=-100, reduction="none")
    return loss[labels[1:] != -100]


def packed_rows(tok, sample_rows) -> list[dict]:
    """Four packed 256-token rows that each hold at least three samples, and need padding."""
    data = tokenize_rows(sample_rows, tok, 256, MASKING, "t")
    packed = [dict(r) for r in pack(data, 256)]
    assert len(packed) < len(data) and sum(len(r["seq_lengths"]) for r in packed) == len(data)
    packed = [r for r in packed if len(r["seq_lengths"]) >= 3][:4]
    assert len(packed) == 4 and len({sum(r["seq_lengths"]) for r in packed}) > 1
    return packed


@torch.no_grad()
def packed_and_alone_losses(model, batch, packed, device="cpu"):
    """Per-token losses of the packed batch, and of each of its samples run alone."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                   position_ids=batch["position_ids"]).logits
    packed_losses, alone_losses = [], []
    for i, row in enumerate(packed):
        packed_losses.append(per_token_loss(logits[i], batch["labels"][i]))
        offset = 0
        for length in row["seq_lengths"]:
            ids, mask = row["input_ids"][offset:offset + length], row["assistant_masks"][offset:offset + length]
            labels = torch.tensor([t if m else -100 for t, m in zip(ids, mask)], device=device)
            alone = model(input_ids=torch.tensor(ids, device=device)[None]).logits[0]
            alone_losses.append(per_token_loss(alone, labels))
            offset += length
    return torch.cat(packed_losses), torch.cat(alone_losses)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_per_token_losses_equal_one_by_one(tok, sample_rows, tmp_path, attn):
    c = plain()["model"]
    model = build_model({**c, "attn_implementation": attn}, None, str(materialize_random_init(c, tok, tmp_path)))
    model.eval()
    packed = packed_rows(tok, sample_rows)
    batch = BlockDiagonalCollator(tok.pad_token_id, attn)(with_labels(packed))
    packed_losses, alone_losses = packed_and_alone_losses(model, batch, packed)
    assert packed_losses.shape == alone_losses.shape and packed_losses.numel() > 60
    assert (packed_losses - alone_losses).abs().max() < 1e-5
    # Without the block mask (a padding mask + restarted position ids), samples leak into each other.
    with torch.no_grad():
        leaky = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                      attention_mask=(batch["input_ids"] != tok.pad_token_id).long()).logits
    leaky_losses = torch.cat([per_token_loss(leaky[i], batch["labels"][i]) for i in range(4)])
    assert (leaky_losses - alone_losses).abs().max() > 1e-3


@pytest.mark.parametrize("max_length", [1024, 48])
def test_mask_survives_packing_and_truncation(tok, sample_rows, max_length):
    data = tokenize_rows(sample_rows, tok, max_length, MASKING, "t")
    # every sample's trained tokens, in order, from the unpacked (maybe truncated) rows
    per_sample = {tuple(r["input_ids"]): [t for t, m in zip(r["input_ids"], r["assistant_masks"]) if m] for r in data}
    packed = [dict(r) for r in pack(data, max_length)]
    batch = BlockDiagonalCollator(tok.pad_token_id)(with_labels(packed))
    for i, row in enumerate(packed):
        offset, expected = 0, []
        for length in row["seq_lengths"]:
            expected += per_sample[tuple(row["input_ids"][offset:offset + length])]
            offset += length
        trained = batch["labels"][i][batch["labels"][i] != -100].tolist()
        assert trained == expected and trained


def test_truncation_keeps_the_mask_on_what_remains_and_drops_empty_rows(tok, caplog):
    long = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "one two three " * 20}],
            "tools": None}
    late = {"messages": [{"role": "user", "content": "word " * 60}, {"role": "assistant", "content": "x"}],
            "tools": None}
    with caplog.at_level(logging.WARNING):
        data = tokenize_rows([long, late], tok, 24, MASKING, "train")
    assert len(data) == 1 and len(data[0]["input_ids"]) == 24
    kept = tok.decode([t for t, m in zip(data[0]["input_ids"], data[0]["assistant_masks"]) if m])
    assert kept and ("one two three " * 20).startswith(kept)
    assert "train: dropped 1 of 2 rows with no assistant token left within max_length=24" in caplog.text


@pytest.mark.slow
def test_packed_training_run(tmp_path):
    trainer, _ = setup(plain(*TINY, "trainer.packing=true", "trainer.max_length=512", "trainer.max_steps=4"),
                       RunDir(tmp_path))
    assert isinstance(trainer.data_collator, BlockDiagonalCollator)
    assert "seq_lengths" in trainer.train_dataset.column_names
    assert len(trainer.train_dataset) < 2384 / 3  # several conversations per row
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.training_loss))


def test_packing_refuses_attention_that_cannot_keep_samples_apart(tmp_path, capsys):
    cache = tmp_path / "cache"
    assert run_cli(f"hydra.run.dir={tmp_path / 'r'}", f"data.cache_dir={cache}", "trainer.packing=true",
                   "model.attn_implementation=flex_attention") == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: model.attn_implementation=flex_attention cannot keep packed samples apart (transformers applies our "
        "block-diagonal mask to its scores as a bias, not a mask); with trainer.packing=true use sdpa, eager or "
        "flash_attention_2"]
    assert not cache.exists()  # refused before any work
    for ok in (["trainer.packing=false", "model.attn_implementation=flex_attention"],
               ["trainer.packing=true", "model.attn_implementation=eager"],
               ["trainer.packing=true", "model.attn_implementation=flash_attention_2"]):
        validate(plain(*ok))  # unpacked flex, and the kernels that isolate packed samples, are accepted
