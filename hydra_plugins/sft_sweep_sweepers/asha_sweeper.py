"""A Hydra sweeper on Ray Tune's ASHAScheduler: `python -m sft_sweep --multirun hparams_search=asha`.

Each trial is a Hydra job (its own composed config and run dir `<sweep dir>/<trial index>`), run
in a Ray worker. Inside it, sft_sweep/tune_report.py reports the optimized metric at every
evaluation, so ASHA stops weak trials early. The search space uses Hydra's sweep grammar:
choice(...), range(...), interval(a, b) and tag(log, interval(a, b)).

As each trial ends: its row in `trials.jsonl`, then the app's `on_record` hook (sft-sweep's preset: the sweep's
`report.html`). After the sweep:
`optimization_results.yaml` (best overrides, value, run dir), `trials.jsonl` and `trials.md` rewritten
(params, status completed / stopped / failed / diverged, steps, best metric).
Re-running the same command resumes an interrupted sweep from Ray Tune's saved experiment, with
ASHA's rungs rebuilt from the trials' reports (_asha_scheduler.py).
"""

import logging
import os
import re
import signal
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import run_job, setup_globals
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext
from hydra.utils import get_method
from omegaconf import MISSING, OmegaConf, open_dict

from hydra_plugins.sft_sweep_sweepers._launchers import outcome
from hydra_plugins.sft_sweep_sweepers.space import as_overrides, as_run_overrides, parse
from sft_sweep import metric_names as names
from sft_sweep.errors import RunInterrupted, exits_in_one_line
from sft_sweep.status import Status

log = logging.getLogger(__name__)


@dataclass
class AshaSweeperConf:
    _target_: str = "hydra_plugins.sft_sweep_sweepers.asha_sweeper.AshaSweeper"
    name: str = "sft_sweep_asha"
    metric: str = MISSING  # what each trial reports (Ray Tune's metric); sft-sweep's preset: ${optimized_metric}
    mode: str = "min"
    num_samples: int = 16
    seed: Optional[int] = 42
    max_concurrent_trials: Optional[int] = None  # None: as many as the resources allow
    cpus_per_trial: float = 1
    gpus_per_trial: Optional[float] = None  # None: 1 when CUDA is available (one trial per GPU), else 0
    # ray.tune.schedulers.ASHAScheduler kwargs (here Ray's own defaults); the budget is the training step reported.
    scheduler: Dict[str, Any] = field(default_factory=lambda: {"grace_period": 1, "reduction_factor": 4,
                                                                "max_t": 100})
    ray_init: Dict[str, Any] = field(default_factory=lambda: {"address": None, "num_cpus": None,
                                                               "include_dashboard": False})
    resume: bool = True
    params: Optional[Dict[str, str]] = None
    enqueue: List[Dict[str, Any]] = field(default_factory=list)  # parameter sets to try first (of num_samples)
    on_record: Optional[str] = None  # dotpath of a function (sweep_dir: str, final: bool), as the Optuna sweeper's


ConfigStore.instance().store(group="hydra/sweeper", name="asha", node=AshaSweeperConf, provider="sft_sweep")


def search_space(params: Dict[str, str], arguments: List[str]):
    """Hydra sweep grammar (space.py) -> (Ray Tune search space, fixed overrides)."""
    from ray import tune

    dims, fixed = parse(params, arguments)
    space = {}
    for key, dim in dims.items():
        if dim.kind == "categorical":
            space[key] = tune.choice(list(dim.choices))
        elif dim.kind == "int" and dim.log:
            space[key] = tune.lograndint(dim.low, dim.high + 1)  # (upper bound excluded)
        elif dim.kind == "int":
            space[key] = tune.qrandint(dim.low, dim.high, dim.step or 1)  # (upper bound included)
        elif dim.log:
            space[key] = tune.loguniform(dim.low, dim.high)
        else:
            space[key] = tune.quniform(dim.low, dim.high, dim.step) if dim.step else tune.uniform(dim.low, dim.high)
    return space, fixed


def trial_index(trial_id: str) -> int:
    """Ray's trial ids end in the trial's index (e.g. 3f2a1_00003): it is the Hydra job number."""
    match = re.search(r"_(\d+)$", trial_id)
    if not match:
        raise ValueError(f"unexpected Ray trial id {trial_id!r}")
    return int(match.group(1))


def trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


class AshaSweeper(Sweeper):
    def __init__(self, **conf) -> None:
        self.conf = conf
        self.config = self.hydra_context = self.task_function = None

    def setup(self, *, hydra_context: HydraContext, task_function, config) -> None:
        from sft_sweep.config import register_resolvers

        register_resolvers()
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    @exits_in_one_line
    def sweep(self, arguments: List[str]) -> None:
        import ray
        import torch
        from ray import tune

        from sft_sweep.run_dir import SweepDir

        conf = self.conf
        sweep_dir = Path(self.config.hydra.sweep.dir).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        space, fixed = search_space(conf["params"], arguments)
        scheduler = conf["scheduler"]
        scheduler = OmegaConf.to_container(scheduler, resolve=True) if OmegaConf.is_config(scheduler) else scheduler
        SweepDir(sweep_dir).write_settings("asha", [conf["metric"]], ["minimize" if conf["mode"] == "min" else
                                                                      "maximize"], list(space),
                                           {"_target_": "ray.tune.schedulers.ASHAScheduler", **scheduler})
        driver_cwd = os.getcwd()
        config, context, task = self.config, self.hydra_context, self.task_function

        def trainable(sampled: dict):
            # A Hydra job per trial, in the driver's working dir so relative paths (data, cache) resolve
            # as they would in a single run; its run dir is <sweep dir>/<trial index>.
            os.chdir(driver_cwd)
            index = trial_index(tune.get_context().get_trial_id())
            overrides = fixed + as_overrides(sampled) + [f"hydra.sweep.dir={sweep_dir}"]
            setup_globals()
            job_cfg = context.config_loader.load_sweep_config(config, overrides)
            with open_dict(job_cfg):
                job_cfg.hydra.job.name = config.hydra.job.name
                job_cfg.hydra.job.id = f"{conf['name']}_{index}"
                job_cfg.hydra.job.num = index
            HydraConfig.instance().set_config(job_cfg)
            if gpus == 0:
                torch.set_num_threads(max(1, int(conf["cpus_per_trial"])))
            ret = run_job(hydra_context=context, task_function=task, config=job_cfg,
                          job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
            _, error = outcome(ret)
            if error is not None:
                raise error  # Ray records the trial as errored; the sweep goes on

        gpus = conf["gpus_per_trial"]
        if gpus is None:
            gpus = 1 if torch.cuda.is_available() else 0
        init = {k: v for k, v in conf["ray_init"].items() if v is not None}
        started_ray = not ray.is_initialized()
        if started_ray:
            ray.init(**init)
        try:
            self.run_tuner(trainable, space, sweep_dir, fixed, gpus)
        finally:
            if started_ray:
                ray.shutdown()  # flush the workers' logs and free the CPUs/GPUs we took

    def run_tuner(self, trainable, space, sweep_dir: Path, fixed: List[str], gpus: float) -> None:
        from ray import tune
        from ray.tune.search.basic_variant import BasicVariantGenerator

        from hydra_plugins.sft_sweep_sweepers._asha_scheduler import ResumableASHAScheduler
        from sft_sweep.run_dir import SweepDir

        conf = self.conf
        experiment = sweep_dir / "ray" / conf["name"]
        trainable_with_resources = tune.with_resources(trainable, {"cpu": conf["cpus_per_trial"], "gpu": gpus})
        if conf["resume"] and tune.Tuner.can_restore(str(experiment)):
            log.info("resuming the ASHA sweep in %s", experiment)
            tuner = tune.Tuner.restore(str(experiment), trainable_with_resources, resume_unfinished=True,
                                       resume_errored=False, param_space=space)
        else:
            scheduler = ResumableASHAScheduler(str(sweep_dir), conf["metric"], time_attr="step", **conf["scheduler"])
            tuner = tune.Tuner(
                trainable_with_resources,
                param_space=space,
                tune_config=tune.TuneConfig(metric=conf["metric"], mode=conf["mode"], scheduler=scheduler,
                                            num_samples=conf["num_samples"],
                                            max_concurrent_trials=conf["max_concurrent_trials"],
                                            search_alg=BasicVariantGenerator(
                                                points_to_evaluate=self.enqueued() or None,
                                                random_state=conf["seed"]),
                                            trial_dirname_creator=trial_dirname),
                run_config=tune.RunConfig(name=conf["name"], storage_path=str(sweep_dir / "ray"),
                                          failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
                                          callbacks=[self.records_callback(sweep_dir)],
                                          verbose=1),
            )
        # Ray Tune stops gently on SIGINT (it saves the experiment, and Tuner.restore resumes it); SIGTERM becomes
        # a SIGINT so that it does the same instead of killing the driver.
        received = []

        def on_sigterm(signum, frame):
            received.append("SIGTERM")
            signal.raise_signal(signal.SIGINT)

        previous = signal.signal(signal.SIGTERM, on_sigterm)
        try:
            grid = tuner.fit()
        finally:
            signal.signal(signal.SIGTERM, previous)
        ended, owed = len(SweepDir(sweep_dir).trial_rows()), self.conf["num_samples"]
        if ended < owed:  # Tune stopped before every trial ended: a signal
            raise RunInterrupted(f"the ASHA sweep stopped by {received[0] if received else 'SIGINT'} with {ended} of "
                                 f"{owed} trials ended; run the same command again to resume it")
        self.write_results(grid, sweep_dir, fixed)

    def enqueued(self) -> List[dict]:
        """`enqueue`'s parameter sets as plain dicts keyed like the search space (Tune's points_to_evaluate)."""
        enqueue = self.conf["enqueue"]
        return [dict(p) for p in (OmegaConf.to_container(enqueue) if OmegaConf.is_config(enqueue) else enqueue)]

    def record(self, sweep, trial_id: str, sampled: dict, last: dict, error) -> dict:
        """A trial's row in trials.jsonl: status completed / stopped / failed / diverged, steps, best metric
        (from the reports the trial wrote before each one, tune_progress.jsonl)."""
        from sft_sweep.run_dir import read_jsonl

        index = trial_index(trial_id)
        metric, run_dir = self.conf["metric"], sweep.trial(index)
        values = [r[metric] for r in read_jsonl(run_dir.tune_progress) if isinstance(r.get(metric), (int, float))
                  and r[metric] == r[metric]]
        max_t = self.conf["scheduler"].get("max_t")
        if error is not None:
            diverged = run_dir.finished and run_dir.read_metrics().get(names.DIVERGED)
            status = Status.DIVERGED if diverged else Status.FAILED
        elif run_dir.finished or (max_t and last.get("step", 0) >= max_t):
            status = Status.COMPLETED
        else:
            status = Status.STOPPED
        best = (min(values) if self.conf["mode"] == "min" else max(values)) if values else None
        row = sweep.record_trial(index, status, {k.removeprefix("config/"): v for k, v in sampled.items()},
                                 run_dir=run_dir.path, value=best if status == Status.COMPLETED else None, best=best,
                                 reason=str(error) if error is not None else None, node=last.get("node"))
        self.recorded(sweep, final=False)
        return row

    def recorded(self, sweep, final: bool) -> None:
        """hydra.sweeper.on_record, the app's hook, after a trial's record or the results."""
        if self.conf.get("on_record"):
            get_method(self.conf["on_record"])(str(sweep.path), final)

    def records_callback(self, sweep_dir: Path):
        """In the driver: each trial's row and the sweep's report.html as soon as the trial ends
        (ASHA kills stopped trials, so they cannot write it themselves)."""
        from ray import tune

        from sft_sweep.run_dir import SweepDir

        sweeper, sweep = self, SweepDir(sweep_dir)

        class TrialRecords(tune.Callback):
            def on_trial_complete(self, iteration, trials, trial, **info):
                sweeper.record(sweep, trial.trial_id, trial.config, trial.last_result or {}, None)

            def on_trial_error(self, iteration, trials, trial, **info):
                sweeper.record(sweep, trial.trial_id, trial.config, trial.last_result or {},
                               trial.get_error() or RuntimeError("trial failed"))

        return TrialRecords()

    def write_results(self, grid, sweep_dir: Path, fixed: List[str]) -> None:
        from sft_sweep.run_dir import SweepDir, write_text

        sweep = SweepDir(sweep_dir)
        metric, recorded = self.conf["metric"], sweep.trial_rows()
        for r in grid:  # a trial that ended while no driver watched (an interrupted sweep's) gets its row now
            if trial_index(Path(r.path).name) not in recorded:
                self.record(sweep, Path(r.path).name, r.config, r.metrics or {}, r.error)
        rows = sorted(sweep.trial_rows().values(), key=lambda r: r["trial"])
        lines = [f"| trial | status | steps | best {metric} | params |", "|---|---|---|---|---|"]
        lines += [f"| {r['trial']} | {Status(r['status']).label} | {r['steps']} | {r['best']} | "
                  f"{' '.join(f'{k}={v}' for k, v in r['params'].items())} |" for r in rows]
        write_text(sweep.trials_table, "\n".join(lines) + "\n")
        scored = [r for r in rows if r["best"] is not None and not Status(r["status"]).failed]
        counts = Counter(Status(r["status"]) for r in rows)
        # ASHA's best is the best value any trial reported (it may be a trial stopped at a later rung)
        sign = 1 if self.conf["mode"] == "min" else -1
        best = min(scored, key=lambda r: sign * r["best"]) if scored else None
        if best is not None:
            best = {**best, "value": best["best"]}
        sweep.write_results("asha", best, as_run_overrides(fixed, best["params"]) if best else [], counts)
        self.recorded(sweep, final=True)
        if best is None:
            log.error("no trial reported %s; see %s", metric, sweep.trials_table)
            return
        log.info("ASHA: best %s=%s (trial %s, %s)", metric, best["value"], best["trial"], best["run_dir"])
