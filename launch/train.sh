#!/usr/bin/env bash
# One fine-tuning run; extra arguments are Hydra overrides.
#   bash launch/train.sh                                   # embedded tiny model, bundled data, CPU
#   bash launch/train.sh model=qwen3_4b lora.r=32 logger=wandb
#   bash launch/train.sh model=qwen3_0_6b_base lora=qlora trainer.max_steps=200
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m sft_sweep "$@"
