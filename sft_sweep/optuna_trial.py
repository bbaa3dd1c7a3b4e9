"""A run that is a trial of the `optuna_pruning` sweeper: report the optimized metric at every evaluation, through
the sweeper's public `report` (hydra_pruning_sweepers.optuna_trial, the function any app calls), and
stop training the moment the pruner says so; the run then writes its records and ends `pruned`.
"""

import logging
import math

from hydra_pruning_sweepers.optuna_trial import current_trial, report
from transformers import TrainerCallback

log = logging.getLogger("sft_sweep")


class OptunaReporter(TrainerCallback):
    """Reports `metric` at every evaluation after step 0 (an untrained model says nothing about the
    hyperparameters) and stops training when the pruner says so (never at the last step: that trial completed)."""

    def __init__(self, metric: str):
        self.metric = metric
        self.pruned_at: int | None = None

    @classmethod
    def for_this_job(cls, optimized_metric) -> "OptunaReporter | None":
        """A reporter when this Hydra job is an optuna_pruning trial with one objective (Optuna prunes no other)."""
        if not isinstance(optimized_metric, str) or current_trial() is None:
            return None
        return cls(optimized_metric)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = (metrics or {}).get(self.metric)
        if state.global_step == 0 or not isinstance(value, float) or not math.isfinite(value):
            return
        if report(state.global_step, value, stop=False) and state.global_step < state.max_steps:
            self.pruned_at = state.global_step
            control.should_training_stop = True
            log.warning("optuna: pruned at step %d (%s=%.4f)", state.global_step, self.metric, value)
