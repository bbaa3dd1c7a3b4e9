"""Ray Tune's ASHAScheduler with rungs that survive a resumed sweep.

Ray saves the trials and the searcher with the experiment, but not the scheduler: `Tuner.restore`
starts ASHA again with empty rungs, so after a resume the first trial to reach each rung passes it
however weak it is (a 1e-7 learning rate would train to max_t), and the sweep no longer compares
new trials with the ones before the interruption. Every trial writes each report to its dir
(records.PROGRESS, asha_trial.report) before sending it, so when the resumed experiment adds back a trial that had
reported, its reports are replayed into the rungs: the resumed sweep decides as the interrupted
one would have.

"""

import logging
import math

from ray.tune.schedulers import ASHAScheduler

from hydra_pruning_sweepers.asha_impl import trial_index
from hydra_pruning_sweepers.records import SweepDir

log = logging.getLogger(__name__)


class ResumableASHAScheduler(ASHAScheduler):
    """`reported`: the metric's name in the trials' reports (Tune sets the scheduler's own from TuneConfig)."""

    def __init__(self, sweep_dir: str, reported: str, time_attr: str = "training_iteration", **asha_kwargs):
        super().__init__(time_attr=time_attr, **asha_kwargs)
        self.sweep_dir, self.reported, self.step_attr = sweep_dir, reported, time_attr

    def on_trial_add(self, tune_controller, trial):
        super().on_trial_add(tune_controller, trial)
        if trial.last_result:  # restored from the saved experiment: it reported before the interruption
            self.replay(tune_controller, trial)

    def replay(self, tune_controller, trial) -> None:
        """The trial's past reports into the rungs, through the scheduler's own public on_trial_result, as if they
        arrived again (where it already has a record, the first one stands, as it did when it was made); the
        decisions are not acted on again."""
        index, replayed = trial_index(trial.trial_id), 0
        for row in SweepDir(self.sweep_dir).progress(index):
            step, value = row.get(self.step_attr), row.get(self.reported)
            # reports drop non-finite values (asha_trial.report), so ASHA never saw them
            if isinstance(step, (int, float)) and isinstance(value, (int, float)) and math.isfinite(value):
                self.on_trial_result(tune_controller, trial, {self.step_attr: step, self.reported: value})
                replayed += 1
        if replayed:
            log.info("ASHA's rungs: trial %d's %d reports from before the resume", index, replayed)
