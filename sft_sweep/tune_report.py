"""Inside a Ray Tune trial (the `asha` sweeper): report the optimized metric at every evaluation.

ASHA kills a trial's process the moment it stops it (also when it reaches max_t), so each report
is preceded by writing the trial's progress to `<run_dir>/tune_progress.jsonl`. The final
evaluation is reported by the task only after the run's records (metrics.json) are written.
"""

import json
import math
import sys
import time
from pathlib import Path

from transformers import TrainerCallback


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


def report(metrics: dict, step: int, run_dir: Path) -> None:
    from ray import tune

    row = {"step": step, "time": time.time(), **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
    with (run_dir / "tune_progress.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    tune.report({k: v for k, v in row.items() if not (isinstance(v, float) and not math.isfinite(v))})


class TuneReporter(TrainerCallback):
    def __init__(self, run_dir: Path):
        self.run_dir = run_dir

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.max_steps and state.global_step >= state.max_steps:
            return  # the last evaluation is reported by the task, after its records are written
        report(metrics or {}, state.global_step, self.run_dir)
