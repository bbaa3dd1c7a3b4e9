#!/usr/bin/env bash
# Acceptance, opt-in (needs PyPI): the package alone in a fresh venv -- no torch, no sft-sweep -- runs its own
# tests (those needing the submitit or ray extras skip) and the README's app; prints the install size and the
# import time of what a run and a sweep import.
#   bash sweepers/scripts/fresh_venv.sh [venv dir, default a temp dir]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${1:-$(mktemp -d)/venv}"
python -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
before=$(du -sk "$venv" | cut -f1)
"$venv/bin/python" -m pip install -q "$here"
after=$(du -sk "$venv" | cut -f1)
"$venv/bin/python" -m pip install -q pytest pytest-xdist
echo "installed: $("$venv/bin/python" -m pip list --format=freeze | grep -v -i -E '^(pip|setuptools|pytest|pytest-xdist|execnet|iniconfig|pluggy|packaging|pygments)==' | tr '\n' ' ')"
echo "install size (hydra-pruning-sweepers and its dependencies): $(( (after - before) / 1024 )) MiB"
cd "$(mktemp -d)"  # not the repository: nothing of it on sys.path
for module in torch sft_sweep ray submitit; do
    if "$venv/bin/python" -c "import $module" 2>/dev/null; then echo "$module is importable: not a fresh venv"; exit 1; fi
done
for module in hydra_plugins.hydra_pruning_sweepers.optuna_sweeper hydra_pruning_sweepers.optuna_impl; do
    best=""
    for _ in 1 2 3; do
        t=$("$venv/bin/python" -X importtime -c "import $module" 2>&1 | awk -F'|' 'END{gsub(/ /,"",$2); print $2}')
        [[ -z "$best" || "$t" -lt "$best" ]] && best=$t
    done
    echo "import $module: $(( best / 1000 )) ms (cumulative, best of 3)"
done
"$venv/bin/python" -m pytest -q -n 2 -p no:cacheprovider --rootdir "$here" -c "$here/pyproject.toml" "$here/tests"
