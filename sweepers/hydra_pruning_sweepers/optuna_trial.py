"""Inside a trial of the `optuna_pruning` sweeper: report intermediate values, and stop when the pruner says so.
The one function an app calls to be pruned, whatever the app:

    from hydra_pruning_sweepers.optuna_trial import report

    @hydra.main(config_path="conf", config_name="config", version_base="1.3")
    def train(cfg) -> float:
        loss = 1.0
        for step in range(1, cfg.steps + 1):
            loss = ...                       # one step of work
            report(step, loss)               # raises optuna.TrialPruned when this trial is pruned
        return loss

`report` finds its trial from the job's own Hydra config (the sweeper launched it as job number N = Optuna
trial N, with the study's storage and name in hydra.sweeper) and does nothing outside such a sweep, so the same
app runs alone unchanged. A trial that raises optuna.TrialPruned is recorded `pruned`; one that returns is told
its value. `report(step, value, stop=False)` returns True instead of raising, for an app that must write its
own records before it stops, then raises records.TrialPruned.

The pruner is rebuilt in the trial from the study's user attributes, by name from optuna.pruners only: a
value in a shared storage never makes a trial call anything else.
"""

import functools
import logging
import math
import sys
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger(__name__)
SWEEPER = "hydra_plugins.hydra_pruning_sweepers.optuna_sweeper.OptunaSweeper"
# the study's user attribute: {"name": <class in optuna.pruners>, "kwargs": {...}}
PRUNER_ATTR = "hydra_pruning_sweepers:pruner"


def study_name(sweeper_conf, sweep_dir: Path) -> str:
    """The study a sweep works on: hydra.sweeper.study_name, else the sweep dir's name."""
    return sweeper_conf.get("study_name") or Path(sweep_dir).name


def open_storage(storage: Optional[str], sweep_dir: Path):
    """`null` / `journal` (a journal file in the sweep dir: many workers, shared filesystems), `journal:///path`
    (a journal file there), `sqlite` (the sweep dir's optuna.db) or any SQLAlchemy URL. Never in memory: a trial
    in another process must reach the study, and re-running the command must find it."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    if storage in (None, "journal") or str(storage).startswith("journal://"):
        path = Path(sweep_dir) / "optuna.journal" if storage in (None, "journal") else Path(
            str(storage).removeprefix("journal://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path), JournalFileOpenLock(str(path))))
    if storage == "sqlite":
        storage = f"sqlite:///{Path(sweep_dir) / 'optuna.db'}"
    return optuna.storages.RDBStorage(storage)


def pruner_spec(conf: dict) -> dict:
    """A pruner's config (hydra.sweeper.pruner: `_target_` and arguments) as the study keeps it for its trials:
    the class's name in optuna.pruners and the arguments."""
    target = str(conf.get("_target_", "optuna.pruners.NopPruner"))
    return {"name": target.rsplit(".", 1)[-1], "module": target.rsplit(".", 1)[0],
            "kwargs": {k: v for k, v in conf.items() if not k.startswith("_")}}


def build_pruner(spec: Optional[dict]):
    """The pruner a spec names: a class of optuna.pruners only, with plain-value arguments (the sweeper builds
    its own this way too, so a pruner that a trial could not rebuild is refused before the sweep starts)."""
    import optuna

    if not spec:
        return optuna.pruners.NopPruner()
    cls = getattr(optuna.pruners, str(spec.get("name")), None)
    if spec.get("module", "optuna.pruners") != "optuna.pruners" or not (
            isinstance(cls, type) and issubclass(cls, optuna.pruners.BasePruner)):
        raise ValueError(f"pruner {spec.get('module')}.{spec.get('name')}: not a class of optuna.pruners")
    kwargs = spec.get("kwargs") or {}
    if not all(isinstance(v, (int, float, str, bool, type(None))) for v in kwargs.values()):
        raise ValueError(f"the pruner's arguments must be plain values: {kwargs}")
    return cls(**kwargs)


@functools.cache
def _trial(sweep_dir: str, storage: Optional[str], name: str, number: int):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = open_storage(storage, Path(sweep_dir))
    study = optuna.load_study(study_name=name, storage=store)
    study.pruner = build_pruner(study.user_attrs.get(PRUNER_ATTR))
    return take_up(study, store, number)


def take_up(study, storage, number: int):
    """The `optuna.trial.Trial` of a study's trial `number`, asked in another process: to report to, or tell.

    Optuna has no public way to get a live Trial for a trial another process asked (optuna/optuna#2987, closed
    unresolved): its documented constructor, Trial(study, trial_id), is the one way; the storage's public
    get_trial_id_from_study_id_trial_number turns the number into the id. Pinned by
    tests/test_launchers.py (a report through it reaches the study, should_prune answers)."""
    import optuna

    study_id = storage.get_study_id_from_name(study.study_name)
    return optuna.trial.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, number))


def current_trial():
    """The Optuna trial this Hydra job runs, or None outside an `optuna_pruning` sweep."""
    if "hydra" not in sys.modules:
        return None
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN or hc.sweeper.get("_target_") != SWEEPER:  # (a single run of a swept app)
        return None
    sweep_dir = Path(hc.sweep.dir).resolve()
    return _trial(str(sweep_dir), hc.sweeper.get("storage"), study_name(hc.sweeper, sweep_dir), int(hc.job.num))


def report(step: int, value: Any, stop: bool = True) -> bool:
    """Report `value` (a number) at `step` to this job's trial; when the pruner says the trial should stop, raise
    optuna.TrialPruned (or, with stop=False, return True). Outside an optuna_pruning sweep, or in a study with
    several objectives: nothing, False. A non-finite value is not reported (a pruner cannot compare it)."""
    trial = current_trial()
    value = float(value)
    # Optuna keeps no intermediate values of a study with several objectives (nor prunes one)
    if trial is None or not math.isfinite(value) or len(trial.study.directions) > 1:
        return False
    trial.report(value, int(step))
    if not trial.should_prune():
        return False
    log.info("optuna: trial %d pruned at step %d (%.6g)", trial.number, step, value)
    if stop:
        import optuna

        raise optuna.TrialPruned(f"pruned at step {step} ({value:.6g})")
    return True
