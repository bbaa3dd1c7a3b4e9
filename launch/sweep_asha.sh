#!/usr/bin/env bash
# Ray Tune ASHA sweep: weak trials stop early; one trial per GPU (CPUs per trial without GPUs).
#   bash launch/sweep_asha.sh hydra.sweeper.num_samples=32 model=qwen3_0_6b_base
#   bash launch/sweep_asha.sh hydra.sweeper.ray_init.address=auto      # on an existing Ray cluster
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m sft_sweep --multirun hparams_search=asha "$@"
