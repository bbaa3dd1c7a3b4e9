#!/usr/bin/env bash
# Install sft-sweep and its sweepers (editable, with test tools) into the current Python.
#   bash launch/install.sh
# A machine that already has torch keeps it. Without torch, torch==2.13.0 is installed first:
# on a CPU-only machine with the local CPU wheel that is the CPU build; asking pip for plain
# `torch` instead would pull the multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import torch" 2>/dev/null; then
    python -m pip install -q torch==2.13.0
fi
# The sweepers first: sft-sweep depends on them, and they are not on PyPI yet (sweepers/README.md).
python -m pip install -q -e "./sweepers[test]"
python -m pip install -q -e ".[test]"
