"""The `asha` sweeper's work (its config: asha_sweeper.py).

Each trial is a Hydra job composed in its Ray worker, run in the driver's working dir so that relative paths
resolve as in a single run; its dir is `<sweep dir>/<trial index>`. As each trial ends: its row in `trials.jsonl`,
then the app's `on_record` hook. After the sweep: `optimization_results.yaml` (best overrides, value, dir) and
`trials.md` (params, status completed / stopped / failed / diverged, steps, best reported value).

A trial's status: completed when its task returned or it reached max_t; stopped when ASHA stopped it; diverged
when its task raised records.TrialDiverged; failed for any other error. ASHA kills the process of a trial it stops
(Ray marks both ends `done`), so a task that ends by itself says how in its dir (records.OUTCOME) first.
"""

import json
import logging
import os
import re
import signal
from collections import Counter
from pathlib import Path
from typing import Dict, List

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import run_job, setup_globals
from hydra.types import HydraContext
from hydra.utils import get_method
from omegaconf import OmegaConf, open_dict

from hydra_pruning_sweepers.launchers import outcome
from hydra_pruning_sweepers.records import (
    OUTCOME,
    Status,
    SweepDir,
    TrialDiverged,
    TrialInterrupted,
    exits_in_one_line,
    write_text,
)
from hydra_pruning_sweepers.space import as_overrides, as_run_overrides, parse

log = logging.getLogger("hydra_plugins.hydra_pruning_sweepers.asha_sweeper")


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


def plain(value):
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


class AshaSweeperImpl:
    def __init__(self, conf: dict) -> None:
        self.conf = {k: plain(v) for k, v in conf.items()}
        self.config = self.hydra_context = self.task_function = None

    def setup(self, *, hydra_context: HydraContext, task_function, config) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    @exits_in_one_line
    def sweep(self, arguments: List[str]) -> None:
        import ray
        from ray import tune

        conf = self.conf
        sweep_dir = Path(self.config.hydra.sweep.dir).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        space, fixed = search_space(conf["params"], arguments)
        SweepDir(sweep_dir).write_settings("asha", [conf["metric"]], ["minimize" if conf["mode"] == "min" else
                                                                      "maximize"], list(space),
                                           {"_target_": "ray.tune.schedulers.ASHAScheduler", **conf["scheduler"]})
        driver_cwd = os.getcwd()
        config, context, task, name = self.config, self.hydra_context, self.task_function, conf["name"]

        def trainable(sampled: dict):
            # A Hydra job per trial, in the driver's working dir; its dir is <sweep dir>/<trial index>.
            os.chdir(driver_cwd)
            index = trial_index(tune.get_context().get_trial_id())
            overrides = fixed + as_overrides(sampled) + [f"hydra.sweep.dir={sweep_dir}"]
            setup_globals()
            job_cfg = context.config_loader.load_sweep_config(config, overrides)
            with open_dict(job_cfg):
                job_cfg.hydra.job.name = config.hydra.job.name
                job_cfg.hydra.job.id = f"{name}_{index}"
                job_cfg.hydra.job.num = index
            HydraConfig.instance().set_config(job_cfg)
            ret = run_job(hydra_context=context, task_function=task, config=job_cfg,
                          job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
            _, error = outcome(ret)
            status = (Status.COMPLETED if error is None else Status.DIVERGED if isinstance(error, TrialDiverged)
                      else Status.FAILED)
            reason = None if error is None else f"{type(error).__name__}: {error}".splitlines()[0]
            write_text(Path(ret.hydra_cfg.hydra.runtime.output_dir) / OUTCOME,
                       json.dumps({"status": status.value, "reason": reason}))
            if error is not None:
                raise error  # Ray records the trial as errored; the sweep goes on

        init = {k: v for k, v in conf["ray_init"].items() if v is not None}
        started_ray = not ray.is_initialized()
        if started_ray:
            ray.init(**init)
        try:
            gpus = conf["gpus_per_trial"]
            if gpus is None:  # one trial per GPU where the cluster has GPUs
                gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
            self.run_tuner(trainable, space, sweep_dir, fixed, gpus)
        finally:
            if started_ray:
                ray.shutdown()  # flush the workers' logs and free the CPUs/GPUs we took

    def run_tuner(self, trainable, space, sweep_dir: Path, fixed: List[str], gpus: float) -> None:
        from ray import tune
        from ray.tune.search.basic_variant import BasicVariantGenerator

        from hydra_pruning_sweepers.asha_scheduler import ResumableASHAScheduler

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
                                                points_to_evaluate=[dict(p) for p in conf["enqueue"]] or None,
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
        ended, owed = len(SweepDir(sweep_dir).trial_rows()), conf["num_samples"]
        if ended < owed:  # Tune stopped before every trial ended: a signal
            raise TrialInterrupted(f"the ASHA sweep stopped by {received[0] if received else 'SIGINT'} with {ended} "
                                   f"of {owed} trials ended; run the same command again to resume it")
        self.write_results(grid, sweep_dir, fixed)

    def record(self, sweep: SweepDir, trial_id: str, sampled: dict, last: dict, error) -> dict:
        """A trial's row in trials.jsonl: status, steps, best reported value (from the reports the trial wrote
        before each one: asha_trial.report)."""
        index = trial_index(trial_id)
        metric = self.conf["metric"]
        progress = sweep.progress(index)
        values = [r[metric] for r in progress if isinstance(r.get(metric), (int, float)) and r[metric] == r[metric]]
        max_t, ended = self.conf["scheduler"].get("max_t"), sweep.outcome(index)
        if ended is not None:  # the task ended by itself: returned, diverged or raised
            status, reason = Status(ended["status"]), ended.get("reason")
        elif error is not None:  # its process died
            status, reason = Status.FAILED, str(error).strip().splitlines()[-1] if str(error).strip() else "died"
        else:  # ASHA stopped it: at a rung, or at max_t (its full budget)
            status, reason = Status.COMPLETED if max_t and last.get("step", 0) >= max_t else Status.STOPPED, None
        best = (min(values) if self.conf["mode"] == "min" else max(values)) if values else None
        row = sweep.record_trial(index, status, {k.removeprefix("config/"): v for k, v in sampled.items()},
                                 run_dir=sweep.trial_dir(index), steps=progress[-1]["step"] if progress else None,
                                 value=best if status == Status.COMPLETED else None, best=best, reason=reason,
                                 node=last.get("node"))
        self.recorded(sweep, final=False)
        return row

    def recorded(self, sweep: SweepDir, final: bool) -> None:
        """hydra.sweeper.on_record, the app's hook, after a trial's record or the results."""
        if self.conf.get("on_record"):
            get_method(self.conf["on_record"])(str(sweep.path), final)

    def records_callback(self, sweep_dir: Path):
        """In the driver: each trial's row as soon as the trial ends (ASHA kills stopped trials, so they cannot
        write it themselves)."""
        from ray import tune

        sweeper, sweep = self, SweepDir(sweep_dir)

        class TrialRecords(tune.Callback):
            def on_trial_complete(self, iteration, trials, trial, **info):
                sweeper.record(sweep, trial.trial_id, trial.config, trial.last_result or {}, None)

            def on_trial_error(self, iteration, trials, trial, **info):
                sweeper.record(sweep, trial.trial_id, trial.config, trial.last_result or {},
                               trial.get_error() or RuntimeError("the trial failed"))

        return TrialRecords()

    def write_results(self, grid, sweep_dir: Path, fixed: List[str]) -> None:
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
