"""`python -m sft_sweep [overrides]`: see sft_sweep/train.py."""

from sft_sweep.train import main

main()
