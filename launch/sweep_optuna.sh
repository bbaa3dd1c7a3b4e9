#!/usr/bin/env bash
# Optuna TPE sweep (SQLite study in the sweep dir; re-run the same command to resume).
#   bash launch/sweep_optuna.sh hydra.sweeper.n_trials=40 hydra.sweeper.study_name=qwen3_lr model=qwen3_4b
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m sft_sweep --multirun hparams_search=optuna "$@"
