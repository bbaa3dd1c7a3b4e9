"""trl.SFTConfig from the `optim` and `trainer` groups plus what the run decides."""

import os

import torch
from trl import SFTConfig

from sft_sweep.model import bf16_supported


def build_sft_config(optim_cfg: dict, trainer_cfg: dict, *, output_dir: str, seed: int,
                     report_to: list[str], run_name: str) -> SFTConfig:
    kwargs = {**optim_cfg, **trainer_cfg}
    # transformers 5 takes a warmup ratio as a float < 1 in warmup_steps.
    kwargs["warmup_steps"] = kwargs.pop("warmup_ratio", 0.0)
    if kwargs.get("bf16") == "auto":
        kwargs["bf16"] = bf16_supported()
    # The dataset arrives tokenized with our own `assistant_masks` (see masking.py), which
    # SFTTrainer always applies; its own assistant_only_loss would re-render the chat and
    # needs {% generation %} markers in the template, so it stays off.
    kwargs.pop("assistant_only_loss", None)
    kwargs.setdefault("include_num_input_tokens_seen", "non_padding")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        # Several CPU processes (launch/multi_gpu.sh without GPUs): transformers only goes
        # data-parallel there when told to use the CPU, over gloo.
        kwargs.setdefault("use_cpu", True)
        kwargs.setdefault("ddp_backend", "gloo")
    return SFTConfig(
        **kwargs,
        assistant_only_loss=False,
        output_dir=output_dir,
        seed=seed,
        data_seed=seed,
        report_to=report_to,
        run_name=run_name,
        save_only_model=False,
    )
