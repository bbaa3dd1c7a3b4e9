"""sft-sweep's Hydra sweeper plugins (Hydra discovers plugins in the `hydra_plugins` namespace):

- `optuna_resumable`: hydra-optuna-sweeper that resumes an interrupted study (only the trials still
  owed run, numbered after the earlier ones) and names the best trial's run dir in its results.
- `asha`: Ray Tune's ASHAScheduler over Hydra jobs (see asha_sweeper.py).
"""
