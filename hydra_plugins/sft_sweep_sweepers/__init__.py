"""sft-sweep's Hydra sweeper plugins (Hydra discovers plugins in the `hydra_plugins` namespace):

- `sft_optuna` (optuna_sweeper.py): Optuna 5 with pruning, resumable studies and many workers.
- `asha` (asha_sweeper.py): Ray Tune's ASHAScheduler over Hydra jobs.
"""
