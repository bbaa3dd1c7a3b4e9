#!/usr/bin/env bash
# Optuna sweep with trials in parallel on one machine's GPUs: one Ray job per trial, one GPU each.
#   bash launch/sweep_optuna_gpus.sh 4 model=qwen3_4b         # 4 trials at a time
set -euo pipefail
cd "$(dirname "$0")/.."
GPUS="${1:?number of parallel trials (GPUs)}"; shift
exec python -m sft_sweep --multirun hparams_search=optuna hydra/launcher=ray \
    hydra.sweeper.n_jobs="$GPUS" +hydra.launcher.ray.remote.num_gpus=1 "$@"
