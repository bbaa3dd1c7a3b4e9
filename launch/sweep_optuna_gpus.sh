#!/usr/bin/env bash
# One Optuna worker per visible GPU, all working one study (journal storage in the sweep dir): each
# takes the next trial until hydra.sweeper.n_trials exist, so a pruned trial frees its GPU at once.
# Run it again to resume; run it on every machine that shares the filesystem to add their GPUs.
#   bash launch/sweep_optuna_gpus.sh model=qwen3_4b hydra.sweeper.n_trials=40
# GPUs: $CUDA_VISIBLE_DEVICES if set, else every GPU nvidia-smi lists. Logs: $SFT_SWEEP_LOGS
# (default outputs/sweeps/logs/worker_gpu<N>.log).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
    IFS=, read -ra GPUS <<< "$CUDA_VISIBLE_DEVICES"
else
    mapfile -t GPUS < <(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null || true)
fi
if [ "${#GPUS[@]}" -eq 0 ]; then
    echo "error: no GPU visible (set CUDA_VISIBLE_DEVICES, or run python -m sft_sweep --multirun hparams_search=optuna)" >&2
    exit 2
fi
LOGS="${SFT_SWEEP_LOGS:-outputs/sweeps/logs}"
mkdir -p "$LOGS"
pids=()
for gpu in "${GPUS[@]}"; do
    CUDA_VISIBLE_DEVICES="$gpu" python -m sft_sweep --multirun hparams_search=optuna hydra.sweeper.storage=journal \
        "$@" > "$LOGS/worker_gpu$gpu.log" 2>&1 &
    pids+=("$!")
    echo "worker on GPU $gpu: pid ${pids[-1]}, log $LOGS/worker_gpu$gpu.log"
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit "$status"
