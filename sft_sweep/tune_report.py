"""Inside a Ray Tune trial (the `asha` sweeper): report the optimized metric at every evaluation.

ASHA kills a trial's process the moment it stops it (also when it reaches max_t), so each report
is preceded by writing the trial's progress to the run dir's tune_progress.jsonl, and the last
evaluation is reported only once the run's records are written (`final`, called by the recipe).
"""

import math
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

from sft_sweep.metric_names import DIVERGED, GLOBAL_STEP
from sft_sweep.run_dir import append_jsonl


def in_tune_trial() -> bool:
    if "ray" not in sys.modules:  # never import Ray (seconds) for a plain run
        return False
    import warnings

    try:
        from ray import tune

        with warnings.catch_warnings():  # outside a Tuner (e.g. under hydra/launcher=ray) Ray warns
            warnings.simplefilter("ignore")
            return tune.get_context().get_trial_id() is not None
    except Exception:
        return False


def report(metrics: dict, step: int, progress_file: Path) -> None:
    import ray
    from ray import tune

    node = ray.get_runtime_context().get_node_id()  # which machine of the cluster ran it
    row = {"step": step, "time": time.time(), "node": node,
           **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
    append_jsonl(progress_file, row)
    tune.report({k: v for k, v in row.items() if not (isinstance(v, float) and not math.isfinite(v))})


class TuneReporter(TrainerCallback):
    def __init__(self, progress_file: Path):
        self.progress_file = progress_file

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.max_steps and state.global_step >= state.max_steps:
            return  # the last evaluation is reported once the run's records are written
        report(metrics or {}, state.global_step, self.progress_file)

    def final(self, metrics: dict) -> None:
        """The last report, once the run's records are written (metrics.json's values)."""
        if not metrics[DIVERGED]:  # a diverged trial fails; Ray records it as errored
            report({k: v for k, v in metrics.items() if k.startswith("eval_")}, metrics[GLOBAL_STEP],
                   self.progress_file)
