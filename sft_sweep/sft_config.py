"""trl.SFTConfig from the `optim` and `trainer` groups (whose keys are its arguments) plus what the
run decides: where checkpoints go, the seed, W&B, the run name."""

import importlib.util

import torch
from trl import SFTConfig

from sft_sweep import dist
from sft_sweep.errors import UserError
from sft_sweep.model import bf16_supported


def build_sft_config(optim_cfg: dict, trainer_cfg: dict, *, output_dir: str, seed: int,
                     report_to: list[str], run_name: str) -> SFTConfig:
    kwargs = {**optim_cfg, **trainer_cfg}
    if kwargs.get("bf16") == "auto":
        kwargs["bf16"] = bf16_supported()
    if kwargs.get("use_liger_kernel") == "auto":  # Liger's RMSNorm/SwiGLU/RoPE kernels: CUDA + installed
        kwargs["use_liger_kernel"] = torch.cuda.is_available() and importlib.util.find_spec("liger_kernel") is not None
    if kwargs.pop("assistant_only_loss", False):
        # The dataset arrives tokenized with sft-sweep's own `assistant_masks` (masking.py), which
        # SFTTrainer always applies; TRL's flag would re-render conversations and raises on
        # pre-tokenized rows. What the loss sees is data.train_on.
        raise UserError("trainer.assistant_only_loss: the loss is on assistant tokens by default; "
                        "choose what trains with data.train_on=all_assistant|last_assistant|all")
    kwargs.pop("on_oom", None)  # ours (trainer.py), not an SFTConfig field
    kwargs.pop("by_data_size", None)  # ours (sizing.py, trainer=auto_by_size)
    kwargs.pop("resume_from_checkpoint", None)  # the recipe resolves it (auto | path | null): preemption.py
    kwargs.setdefault("include_num_input_tokens_seen", "non_padding")
    kwargs.setdefault("dataloader_pin_memory", torch.cuda.is_available())  # pinned memory serves only a GPU
    if dist.world_size() > 1 and not torch.cuda.is_available():
        # Several CPU processes (launch/multi_gpu.sh without GPUs): transformers only goes
        # data-parallel there when told to use the CPU, over gloo.
        kwargs.setdefault("use_cpu", True)
        kwargs.setdefault("ddp_backend", "gloo")
    return SFTConfig(**kwargs, output_dir=output_dir, seed=seed, data_seed=seed, report_to=report_to,
                     run_name=run_name, save_only_model=False)
