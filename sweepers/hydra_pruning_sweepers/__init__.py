"""hydra-pruning-sweepers: two Hydra sweepers that stop weak trials early.

- `optuna_pruning` (hydra_plugins/hydra_pruning_sweepers/optuna_sweeper.py; its work: optuna_impl.py): Optuna with
  pruning, resumable studies and many workers, on any launcher. A trial reports with optuna_trial.report.
- `asha` (hydra_plugins/hydra_pruning_sweepers/asha_sweeper.py; its work: asha_impl.py): Ray Tune's ASHAScheduler
  over Hydra jobs. A trial reports with asha_trial.report.

Both write the same records (records.py) and read the same search-space grammar (space.py). This package is
outside `hydra_plugins` on purpose: Hydra's plugin scan executes every module there again on each run, which would
make a second copy of each class an app has already imported (its exceptions would no longer be the sweepers').
"""

__version__ = "0.1.0"


def report(step: int, value) -> None:
    """Report `value` at `step` to the sweeper that runs this trial, whichever it is: the Optuna sweeper (raises
    optuna.TrialPruned when the pruner stops the trial; optuna_trial.report) or ASHA (which kills a trial it stops;
    asha_trial.report). Outside a sweep: nothing."""
    from hydra_pruning_sweepers import asha_trial, optuna_trial

    if asha_trial.current_trial_id() is not None:
        asha_trial.report(step, value)
    else:
        optuna_trial.report(step, value)
