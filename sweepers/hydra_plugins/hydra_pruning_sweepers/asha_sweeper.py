"""`hydra/sweeper=asha`: a Hydra sweeper on Ray Tune's ASHAScheduler, for any Hydra app (the logic: asha_impl.py;
in a trial: asha_trial.py).

    python my_app.py --multirun hydra/sweeper=asha hydra.sweeper.metric=loss 'lr=tag(log, interval(1e-5, 1e-2))'

Each trial is a Hydra job (its own composed config and dir `<sweep dir>/<trial index>`) run in a Ray worker; it
reports with asha_trial.report, and ASHA stops weak trials at its rungs. The search space is Hydra's sweep grammar
(space.py), as the Optuna sweeper's. Re-running the same command resumes an interrupted sweep from Ray Tune's saved
experiment, with ASHA's rungs rebuilt from the trials' reports (asha_scheduler.py).
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext
from omegaconf import MISSING


@dataclass
class AshaSweeperConf:
    _target_: str = "hydra_plugins.hydra_pruning_sweepers.asha_sweeper.AshaSweeper"
    name: str = "asha"  # the Ray Tune experiment (<sweep dir>/ray/<name>)
    metric: str = MISSING  # the name of what each trial reports (asha_trial.report): Ray Tune's metric
    mode: str = "min"
    num_samples: int = 16
    seed: Optional[int] = 42
    max_concurrent_trials: Optional[int] = None  # None: as many as the resources allow
    cpus_per_trial: float = 1
    gpus_per_trial: Optional[float] = None  # None: 1 where the Ray cluster has GPUs (one trial per GPU), else 0
    # ray.tune.schedulers.ASHAScheduler kwargs (here Ray's own defaults), in the `step`s the trials report
    scheduler: Dict[str, Any] = field(default_factory=lambda: {"grace_period": 1, "reduction_factor": 4,
                                                                "max_t": 100})
    ray_init: Dict[str, Any] = field(default_factory=lambda: {"address": None, "num_cpus": None,
                                                               "include_dashboard": False})
    resume: bool = True
    params: Optional[Dict[str, str]] = None
    enqueue: List[Dict[str, Any]] = field(default_factory=list)  # parameter sets to try first (of num_samples)
    on_record: Optional[str] = None  # dotpath of a function (sweep_dir: str, final: bool), as the Optuna sweeper's


ConfigStore.instance().store(group="hydra/sweeper", name="asha", node=AshaSweeperConf,
                             provider="hydra-pruning-sweepers")


class AshaSweeper(Sweeper):
    """Hydra's entry point; the work is asha_impl.AshaSweeperImpl's (imported when a sweep starts, so Hydra's
    plugin scan of every run does not import Ray)."""

    def __init__(self, **conf: Any) -> None:
        from hydra_pruning_sweepers.asha_impl import AshaSweeperImpl

        self.sweeper = AshaSweeperImpl(conf)

    def setup(self, *, hydra_context: HydraContext, task_function, config) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> None:
        return self.sweeper.sweep(arguments)
