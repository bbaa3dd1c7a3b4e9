"""Inside a Ray Tune trial (the `asha` sweeper): report the eval metrics at every evaluation, through the sweeper's
public `report` (hydra_pruning_sweepers.asha_trial, which writes each report to the run dir's
tune_progress.jsonl before sending it: ASHA kills a trial's process the moment it stops it, also when it reaches
max_t). The last evaluation is reported only once the run's records are written (`final`, called by the recipe).
"""

from hydra_pruning_sweepers.asha_trial import current_trial_id, report
from transformers import TrainerCallback

from sft_sweep.metric_names import DIVERGED, GLOBAL_STEP


def in_tune_trial() -> bool:
    return current_trial_id() is not None


class TuneReporter(TrainerCallback):
    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.max_steps and state.global_step >= state.max_steps:
            return  # the last evaluation is reported once the run's records are written
        report(state.global_step, metrics or {})

    def final(self, metrics: dict) -> None:
        """The last report, once the run's records are written (metrics.json's values)."""
        if not metrics[DIVERGED]:  # a diverged trial fails; Ray records it as errored
            report(metrics[GLOBAL_STEP], {k: v for k, v in metrics.items() if k.startswith("eval_")})
