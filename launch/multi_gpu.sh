#!/usr/bin/env bash
# One run data-parallel over N processes (GPUs; on a CPU-only machine, CPU processes over gloo).
#   bash launch/multi_gpu.sh 4 model=qwen3_4b lora.r=32
# Every rank composes the same config; the run dir is fixed here so all ranks share it.
# Rank 0 writes the records, logs to W&B and runs the end-of-run evaluation.
set -euo pipefail
cd "$(dirname "$0")/.."
NPROC="${1:?number of processes (GPUs)}"; shift
RUN_DIR="${RUN_DIR:-outputs/runs/$(date +%Y-%m-%d_%H-%M-%S)_x${NPROC}}"
exec torchrun --standalone --nproc_per_node="$NPROC" -m sft_sweep hydra.run.dir="$RUN_DIR" "$@"
