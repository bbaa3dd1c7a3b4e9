"""Inside a trial of the `asha` sweeper: report what the trial measured, so that ASHA can stop it at a rung.

    from hydra_pruning_sweepers.asha_trial import report

    for step in range(1, cfg.steps + 1):
        loss = ...
        report(step, loss)                 # or report(step, {"loss": loss, "accuracy": acc})

A number is reported under the sweeper's `metric`; a mapping as it is (the sweeper's `metric` among its keys).
ASHA stops a trial by killing its process, so each report is first appended to the trial's dir
(records.PROGRESS, with the time and the Ray node): the sweep's records and a resumed sweep's rungs are read from
there. Outside an ASHA trial `report` does nothing, so the same app runs alone unchanged.
"""

import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional

from hydra_pruning_sweepers.records import PROGRESS, append_jsonl


def current_trial_id() -> Optional[str]:
    """Ray Tune's id of the trial this process runs, or None (never imports Ray for a plain run)."""
    if "ray" not in sys.modules:
        return None
    try:
        from ray import tune

        with warnings.catch_warnings():  # outside a Tuner (e.g. under hydra/launcher=ray) Ray warns
            warnings.simplefilter("ignore")
            return tune.get_context().get_trial_id()
    except Exception:  # noqa: BLE001 -- no Tune session here
        return None


def trial_dir() -> Path:
    """This trial's Hydra job dir (the sweep dir's <trial number>)."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def report(step: int, value: Any) -> None:
    """Report `value` (a number, under the sweeper's metric; or a mapping of names to numbers) at `step`.
    Non-finite numbers are written to the trial's progress but not sent (ASHA cannot compare them)."""
    if current_trial_id() is None:
        return
    import ray
    from hydra.core.hydra_config import HydraConfig
    from ray import tune

    metrics = value if isinstance(value, dict) else {HydraConfig.get().sweeper.metric: value}
    row = {"step": int(step), "time": time.time(), "node": ray.get_runtime_context().get_node_id(),
           **{k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}}
    append_jsonl(trial_dir() / PROGRESS, row)
    tune.report({k: v for k, v in row.items() if not (isinstance(v, float) and not math.isfinite(v))})
