"""Packing that keeps packed samples apart on every attention kernel.

Sequences are packed best-fit-decreasing by TRL's `pack_dataset` (a `seq_lengths` column records
the samples in each row). Flash-attention kernels isolate the samples from restarted position ids
alone, so there TRL's own padding-free packing is used. sdpa and eager kernels ignore position ids
for that purpose (the second sample would see the first), so for them this collator adds an
explicit block-diagonal causal mask: a token attends only to earlier tokens of its own sample.
"""

import torch
from trl.data_utils import pack_dataset
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from sft_sweep.errors import UserError

MASKED = ("sdpa", "eager")  # take our explicit block-diagonal mask


def uses_varlen_kernel(attn_implementation: str) -> bool:
    """flash_attention_2/3 (and hub flash kernels): packed samples kept apart by restarted position ids."""
    return "flash" in attn_implementation


def check_isolated(attn_implementation: str) -> None:
    """Packing is only accepted where packed samples provably cannot see each other."""
    if attn_implementation not in MASKED and not uses_varlen_kernel(attn_implementation):
        raise UserError(
            f"model.attn_implementation={attn_implementation} cannot keep packed samples apart (transformers applies "
            f"our block-diagonal mask to its scores as a bias, not a mask); with trainer.packing=true use sdpa, eager "
            f"or flash_attention_2")


def plan(train_data, trainer_cfg: dict, attn_implementation: str, pad_token_id: int):
    """(train data, collator or None, trainer config) for this run's packing setting.

    sdpa/eager with packing: TRL's padding-free packing would let packed samples attend to each
    other, so pack here and give each batch an explicit block-diagonal mask instead."""
    if not trainer_cfg["packing"] or uses_varlen_kernel(attn_implementation):
        return train_data, None, trainer_cfg  # unpacked, or TRL's own padding-free packing
    collator = BlockDiagonalCollator(pad_token_id, attn_implementation)
    # Transformers counts "non-padding" tokens by summing the attention mask, which is now L x L;
    # packed rows are ~98% real tokens, so count every position instead.
    return pack(train_data, trainer_cfg["max_length"]), collator, {**trainer_cfg, "packing": False,
                                                                    "include_num_input_tokens_seen": "all"}


def pack(dataset, max_length: int):
    """Best-fit-decreasing packing of token rows (input_ids + assistant_masks) into max_length bins."""
    return pack_dataset(dataset, max_length, strategy="bfd")


class BlockDiagonalCollator(DataCollatorForLanguageModeling):
    """Pads a batch; for packed rows, adds restarted position ids and a 4D block-diagonal causal mask."""

    def __init__(self, pad_token_id: int, attn_implementation: str = "sdpa"):
        super().__init__(pad_token_id=pad_token_id, padding_free=False, return_position_ids=True)
        self.additive = attn_implementation == "eager"  # eager adds the mask to the scores; sdpa takes booleans

    def torch_call(self, examples):
        batch = super().torch_call(examples)
        if "seq_lengths" not in examples[0]:
            return batch  # unpacked rows: the ordinary 2D padding mask is right
        keep = batch["attention_mask"].bool()
        starts = (batch["position_ids"] == 0) & keep
        # The first token of each sample has no target within its own sample.
        batch["labels"][starts] = -100
        segment = torch.cumsum(starts, dim=1).masked_fill(~keep, -1)
        length = segment.size(1)
        causal = torch.ones(length, length, dtype=torch.bool).tril()
        allowed = (segment[:, :, None] == segment[:, None, :]) & causal & keep[:, None, :]
        # A padding query attends to itself only, so no row of the mask is empty (sdpa gives NaN there).
        allowed |= torch.eye(length, dtype=torch.bool)
        mask = allowed[:, None]
        if self.additive:
            mask = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
        batch["attention_mask"] = mask
        return batch
