"""hydra-optuna-sweeper, resumable, with a whole-sweep failure budget and a trial table.

Re-running the same sweep command (same sweep dir, study name and SQLite storage) continues the
study: trials left RUNNING by the interruption are marked failed, only `n_trials` minus the trials
already finished run, and their job numbers -- hence run dirs -- continue after every earlier
trial's, so no earlier run dir is ever reused.

hydra-optuna-sweeper applies `max_failure_rate` to each batch of `n_jobs` trials (with n_jobs=1 a
single crash ends the sweep). Here it is a budget for the whole sweep: the sweep stops only once
more than max_failure_rate x n_trials trials have failed. Every trial is appended to
`trials.jsonl` in the sweep dir (number, overrides, status, value or failure reason, run dir).
"""

import logging
from dataclasses import dataclass

import optuna
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobStatus
from omegaconf import OmegaConf

from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from sft_sweep.config import register_resolvers
from sft_sweep.run_dir import SweepDir, append_jsonl

log = logging.getLogger(__name__)


@dataclass
class ResumableOptunaSweeperConf(OptunaSweeperConf):
    _target_: str = "hydra_plugins.sft_sweep_sweepers.optuna_resumable.ResumableOptunaSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="optuna_resumable", node=ResumableOptunaSweeperConf,
                             provider="sft_sweep")


class ResumableOptunaSweeper(OptunaSweeper):
    def setup(self, *, hydra_context, task_function, config) -> None:
        register_resolvers()
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        impl = self.sweeper
        self.sweep_dir = SweepDir(config.hydra.sweep.dir)
        self.sweep_dir.path.mkdir(parents=True, exist_ok=True)  # the SQLite storage lives there
        self.failure_budget = impl.max_failure_rate * impl.n_trials
        self.failed = 0
        impl.max_failure_rate = 1.0  # the per-batch check never fires; `record` enforces the budget
        launch = impl.launcher.launch

        def launch_and_record(job_overrides, initial_job_idx):
            returns = launch(job_overrides, initial_job_idx)
            self.record(returns, initial_job_idx)
            return returns

        impl.launcher.launch = launch_and_record
        if not (impl.storage and impl.study_name):
            return
        try:
            study = optuna.load_study(study_name=impl.study_name, storage=impl.storage)
        except KeyError:
            return  # a new study
        for trial in study.trials:
            if trial.state == optuna.trial.TrialState.RUNNING:  # the interruption cut it off
                # (tag first: optuna refuses to change a trial once it is finished)
                study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
                study._storage.set_trial_state(trial._trial_id, optuna.trial.TrialState.FAIL)
                run_dir = self.sweep_dir.trial(trial.number)
                run_dir.set_status("interrupted", error="the sweep was stopped while this trial ran")
                append_jsonl(self.sweep_dir.trials, {"trial": trial.number, "params": trial.params,
                                                     "status": "interrupted",
                                                 "run_dir": str(run_dir.path)})
                log.warning("trial %d was interrupted: marked failed, and owed again", trial.number)
        trials = study.get_trials(deepcopy=False)
        ran = sum(not t.user_attrs.get("interrupted") for t in trials)
        owed = max(0, impl.n_trials - ran)
        log.info("resuming study %r: %d of %d trials ran, %d owed", impl.study_name, ran, impl.n_trials, owed)
        impl.n_trials = owed
        impl.job_idx = len(trials)  # new trials get new job numbers, hence new run dirs

    def record(self, returns, first_idx: int) -> None:
        for idx, ret in enumerate(returns, start=first_idx):
            failed = ret.status == JobStatus.FAILED
            row = {"trial": idx, "overrides": list(ret.overrides), "status": "failed" if failed else "completed",
                   "run_dir": str(self.sweep_dir.trial(idx).path)}
            if failed:
                row["reason"] = f"{type(ret._return_value).__name__}: {ret._return_value}"
                self.failed += 1
            else:
                row["value"] = ret.return_value
            append_jsonl(self.sweep_dir.trials, row)
        if self.failed > self.failure_budget:
            raise RuntimeError(f"{self.failed} trials failed, more than max_failure_rate x n_trials "
                               f"({self.failure_budget:g}); see {self.sweep_dir.trials}")

    def sweep(self, arguments):
        if self.sweeper.n_trials > 0:
            super().sweep(arguments)
        self.name_best_trial()

    def name_best_trial(self) -> None:
        impl = self.sweeper
        study = optuna.load_study(study_name=impl.study_name, storage=impl.storage)
        completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not completed:
            return
        best = study.best_trial
        results = {"name": "optuna", "best_params": best.params, "best_value": best.value,
                   "best_trial": best.number, "best_run_dir": str(self.sweep_dir.trial(best.number).path),
                   "trials": {"complete": len(completed),
                              "failed": sum(t.state == optuna.trial.TrialState.FAIL for t in study.trials)}}
        self.sweep_dir.write_results(results)
        from sft_sweep.logger import log_sweep_summary

        log_sweep_summary(OmegaConf.to_container(impl.config.logger, resolve=True), self.sweep_dir.path, results)

