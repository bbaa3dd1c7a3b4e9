"""`hydra/sweeper=optuna_pruning`: a Hydra sweeper on Optuna 5 that prunes, resumes and shares one study between
workers -- for any Hydra app (the logic: optuna_impl.py; in a trial: optuna_trial.py).

    python my_app.py --multirun hydra/sweeper=optuna_pruning 'x=range(-5,6)' 'lr=tag(log, interval(1e-5, 1e-2))'
    python my_app.py --multirun hydra/sweeper=optuna_pruning hydra/sweeper/sampler=grid hydra/sweeper/pruner=median

The keys of hydra-optuna-sweeper (sampler, direction, storage, study_name, n_trials, n_jobs, max_failure_rate,
params, custom_search_space) with their meaning there, except where the README's compatibility table says
otherwise, plus: `pruner` (a group: an app reports intermediate values with optuna_trial.report and is pruned),
`metric` (the name of what a trial returns, for the records and report), `enqueue` (parameter sets to try
first) and the heartbeat of running trials.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext
from omegaconf import MISSING


# --- samplers: hydra/sweeper/sampler=tpe|random|grid|gp|cmaes|nsgaii|nsgaiii|qmc -------------------------------
@dataclass
class TPESamplerConf:
    _target_: str = "optuna.samplers.TPESampler"
    seed: Optional[int] = None
    multivariate: bool = True  # (hydra-optuna-sweeper: false) the parameters' dependencies are used
    constant_liar: bool = True  # trials running in parallel are assumed to score badly, so others look elsewhere
    n_startup_trials: int = 10
    n_ei_candidates: int = 24


@dataclass
class GPSamplerConf:
    _target_: str = "optuna.samplers.GPSampler"
    seed: Optional[int] = None
    n_startup_trials: int = 10
    deterministic_objective: bool = False


@dataclass
class RandomSamplerConf:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: Optional[int] = None


@dataclass
class GridSamplerConf:  # every combination of the choice / range / stepped dimensions, each once
    _target_: str = "optuna.samplers.GridSampler"
    seed: Optional[int] = None


@dataclass
class CmaEsSamplerConf:
    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: Optional[int] = None
    sigma0: Optional[float] = None
    n_startup_trials: int = 1
    warn_independent_sampling: bool = True
    consider_pruned_trials: bool = False
    restart_strategy: Optional[str] = None
    inc_popsize: int = 2
    use_separable_cma: bool = False
    with_margin: bool = False


@dataclass
class NSGAIISamplerConf:  # multi-objective
    _target_: str = "optuna.samplers.NSGAIISampler"
    seed: Optional[int] = None
    population_size: int = 50
    mutation_prob: Optional[float] = None
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5


@dataclass
class NSGAIIISamplerConf(NSGAIISamplerConf):  # many-objective; the same arguments
    _target_: str = "optuna.samplers.NSGAIIISampler"


@dataclass
class QMCSamplerConf:
    _target_: str = "optuna.samplers.QMCSampler"
    seed: Optional[int] = None
    qmc_type: str = "sobol"
    scramble: bool = False
    warn_asynchronous_seeding: bool = True
    warn_independent_sampling: bool = True


@dataclass
class MOTPESamplerConf:  # removed from Optuna 4.0: choosing it is a one-line error that says what to use
    _target_: str = "hydra_pruning_sweepers.optuna_impl.motpe_removed"


# --- pruners: hydra/sweeper/pruner=none|hyperband|successive_halving|median ------------------------------------
# The resource is the `step` an app reports with optuna_trial.report (a training step, say). The first
# rung and the full budget follow hydra.sweeper.min_resource / max_resource, whichever pruner is chosen;
# hydra.sweeper.pruner.<key>=... sets one pruner's directly.
@dataclass
class NopPrunerConf:
    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class HyperbandPrunerConf:
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: Any = "${hydra.sweeper.min_resource}"
    max_resource: Any = "${hydra.sweeper.max_resource}"
    reduction_factor: int = 3


@dataclass
class SuccessiveHalvingPrunerConf:
    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = "${hydra.sweeper.min_resource}"
    reduction_factor: int = 4
    min_early_stopping_rate: int = 0


@dataclass
class MedianPrunerConf:
    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.hydra_pruning_sweepers.optuna_sweeper.OptunaSweeper"
    _recursive_: bool = False  # the sampler and pruner are built by the sweeper (the grid needs the space)
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "none"}])
    sampler: Any = MISSING
    pruner: Any = MISSING
    direction: Any = "minimize"  # or a list, one per objective: [minimize, maximize]
    storage: Optional[str] = None  # null: a journal file in the sweep dir (optuna_trial.open_storage)
    study_name: Optional[str] = None  # null: the sweep dir's name
    n_trials: int = 20  # the study's total: re-running the command runs only the trials still owed
    n_jobs: int = 1  # trials at once: a batch on the basic launcher, parallel processes on submitit / ray
    max_failure_rate: float = 0.0  # failed trials allowed, as a share of n_trials, before the sweep stops
    params: Optional[Dict[str, str]] = None
    custom_search_space: Optional[str] = None  # dotpath of a function (cfg, trial) that suggests more parameters
    metric: Any = None  # the name(s) of what a trial returns (records, report); null: value / value_0, value_1...
    min_resource: Any = 1  # the step of the pruners' first rung (Hyperband, successive halving)...
    max_resource: Any = "auto"  # ...and a trial's full budget in steps (auto: the first completed trial's)
    enqueue: List[Dict[str, Any]] = field(default_factory=list)  # parameter sets to try first
    heartbeat_interval: float = 10.0  # a running trial's heartbeat, in seconds...
    heartbeat_grace: float = 120.0  # ...and how long without one before another worker calls it interrupted
    max_relaunches: int = 5  # an interrupted trial is launched again at most this many times, then it failed
    # dotpath of a function (sweep_dir: str, final: bool) called after each trial's row is written to trials.jsonl
    # (final=False) and after optimization_results.yaml (final=True): an app's own records (a report, say)
    on_record: Optional[str] = None


store = ConfigStore.instance()
store.store(group="hydra/sweeper", name="optuna_pruning", node=OptunaSweeperConf, provider="hydra-pruning-sweepers")
for name, node in (("tpe", TPESamplerConf), ("gp", GPSamplerConf), ("random", RandomSamplerConf),
                   ("grid", GridSamplerConf), ("cmaes", CmaEsSamplerConf), ("nsgaii", NSGAIISamplerConf),
                   ("nsgaiii", NSGAIIISamplerConf), ("qmc", QMCSamplerConf), ("motpe", MOTPESamplerConf)):
    store.store(group="hydra/sweeper/sampler", name=name, node=node, provider="hydra-pruning-sweepers")
for name, node in (("none", NopPrunerConf), ("hyperband", HyperbandPrunerConf),
                   ("successive_halving", SuccessiveHalvingPrunerConf), ("median", MedianPrunerConf)):
    store.store(group="hydra/sweeper/pruner", name=name, node=node, provider="hydra-pruning-sweepers")


class OptunaSweeper(Sweeper):
    """Hydra's entry point; the work is optuna_impl.OptunaSweeperImpl's (imported when a sweep starts, so
    Hydra's plugin scan of every run does not import Optuna)."""

    def __init__(self, **conf: Any) -> None:
        from hydra_pruning_sweepers.optuna_impl import OptunaSweeperImpl

        self.sweeper = OptunaSweeperImpl(conf)

    def setup(self, *, hydra_context: HydraContext, task_function, config) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> None:
        return self.sweeper.sweep(arguments)
