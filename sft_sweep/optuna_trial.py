"""Inside a trial of the `optuna` sweeper: report the optimized metric at every evaluation, stop when pruned.

The job re-attaches to its Optuna trial from the study's storage and its trial number (= the Hydra job
number, which the sweeper sets), so this works in-process, under any Hydra launcher and in another
process or machine. The pruner is rebuilt from the spec the sweeper keeps in the study's user attrs.
"""

import logging
import math
import sys
from pathlib import Path

from transformers import TrainerCallback

log = logging.getLogger("sft_sweep")
SWEEPER = "hydra_plugins.sft_sweep_sweepers.optuna_sweeper.OptunaSweeper"


def open_storage(storage: str | None, sweep_dir: Path):
    """`sqlite` / `journal` (a file in the sweep dir), `journal:///path` (a journal file: many workers,
    shared filesystems), or any SQLAlchemy URL. null = a journal file in the sweep dir (a trial in
    another process must reach the study, so never in memory)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    if storage in (None, "journal") or storage.startswith("journal://"):
        path = sweep_dir / "optuna.journal" if storage in (None, "journal") else Path(storage.removeprefix("journal://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path), JournalFileOpenLock(str(path))))
    if storage == "sqlite":
        storage = f"sqlite:///{sweep_dir / 'optuna.db'}"
    return optuna.storages.RDBStorage(storage)


def current_trial(metric: str):
    """The Optuna trial this Hydra job runs, or None outside an `optuna` sweep."""
    if "hydra" not in sys.modules:
        return None
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.sweeper.get("_target_") != SWEEPER:
        return None
    import optuna
    from hydra.utils import instantiate

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(hc.sweeper.storage, Path(hc.sweep.dir).resolve())
    study = optuna.load_study(study_name=hc.sweeper.study_name, storage=storage)
    study.pruner = instantiate(study.user_attrs["pruner"])  # as the sweeper built it (pruners are not stored)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, int(hc.job.num))
    return optuna.trial.Trial(study, trial_id)


class OptunaReporter(TrainerCallback):
    """Reports `metric` at every evaluation after step 0 (an untrained model says nothing about the
    hyperparameters) and stops training the moment the pruner says so."""

    def __init__(self, trial, metric: str):
        self.trial, self.metric = trial, metric
        self.pruned_at: int | None = None

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = (metrics or {}).get(self.metric)
        if state.global_step == 0 or not isinstance(value, float) or not math.isfinite(value):
            return
        self.trial.report(value, state.global_step)
        if state.global_step < state.max_steps and self.trial.should_prune():  # a finished trial is not pruned
            self.pruned_at = state.global_step
            control.should_training_stop = True
            log.warning("optuna: trial %d pruned at step %d (%s=%.4f)", self.trial.number, state.global_step,
                        self.metric, value)
