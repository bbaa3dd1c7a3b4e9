"""A Hydra sweeper on Optuna 5 that prunes: `python -m sft_sweep --multirun hparams_search=optuna`.

Each trial is a Hydra job whose number is its Optuna trial number (run dir `<sweep dir>/<number>`).
Inside it, sft_sweep/optuna_trial.py re-attaches to the trial from storage, reports the optimized
metric at every evaluation, and stops the moment the pruner says so; the job then records itself
`pruned` and the next trial starts at once.

One study, many workers: every worker (this command started again, on another GPU or machine with the
same sweep dir and storage) takes the next trial under a lock until `n_trials` trials exist, counting
those running elsewhere; each running trial carries a heartbeat. A trial whose worker died (its process
gone, or its heartbeat older than `heartbeat_grace` s) is recorded `interrupted`, counted failed, and owed
again -- which is also how re-running the same command resumes a sweep. `max_failure_rate` x `n_trials`
failed trials (crashed or diverged) stop the sweep.

Config keys as in hydra-optuna-sweeper (direction, study_name, storage, n_trials, n_jobs, sampler,
params, max_failure_rate), plus `pruner`, `enqueue` (parameter sets to try first) and the heartbeat.
"""

import logging
import math
import os
import socket
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext
from hydra.utils import instantiate
from omegaconf import MISSING, OmegaConf

from hydra_plugins.sft_sweep_sweepers.space import as_overrides, as_run_overrides, parse
from sft_sweep.errors import RunDiverged, RunInterrupted, TrialPruned, UserError, exits_in_one_line
from sft_sweep.run_dir import RunDir
from sft_sweep.status import Status

log = logging.getLogger(__name__)


# --- config: the sweeper, and the sampler / pruner groups (hydra/sweeper/sampler=gp, hydra/sweeper/pruner=median)
@dataclass
class TPESamplerConf:
    _target_: str = "optuna.samplers.TPESampler"
    seed: Optional[int] = None
    multivariate: bool = True
    constant_liar: bool = True  # trials running in parallel are assumed to score badly, so others look elsewhere
    n_startup_trials: int = 10


@dataclass
class GPSamplerConf:
    _target_: str = "optuna.samplers.GPSampler"
    seed: Optional[int] = None
    n_startup_trials: int = 10


@dataclass
class RandomSamplerConf:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: Optional[int] = None


@dataclass
class GridSamplerConf:  # every combination of the choice/range dimensions (the search space is filled in)
    _target_: str = "optuna.samplers.GridSampler"
    seed: Optional[int] = None


@dataclass
class HyperbandPrunerConf:  # resources are training steps; the first rung is the first evaluation
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: Any = "${trainer.eval_steps}"
    max_resource: Any = "${trainer.max_steps}"  # a trial's full budget ("auto": the first finished trial's steps,
    # and no pruning until one has finished). 3, Optuna's default, makes three brackets of the presets' 12
    # evaluations; 4 makes two and spends fewer steps, but lost the best configuration in 7 of 30 orders where
    # 3 lost it in 1 (python -m sft_sweep.benchmarks.sweeps). For fewer steps: pruner=successive_halving.
    reduction_factor: int = 3


@dataclass
class SuccessiveHalvingPrunerConf:
    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = "${trainer.eval_steps}"
    reduction_factor: int = 4
    min_early_stopping_rate: int = 0


@dataclass
class MedianPrunerConf:
    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1


@dataclass
class NopPrunerConf:
    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.sft_sweep_sweepers.optuna_sweeper.OptunaSweeper"
    _recursive_: bool = False  # the sampler and pruner are built by the sweeper (the grid needs the space)
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "hyperband"}])
    direction: str = "minimize"
    study_name: str = "sft_sweep_optuna"
    storage: Optional[str] = None  # see sft_sweep/optuna_trial.py:open_storage
    n_trials: int = 20
    n_jobs: int = 1  # trials at once in this worker (> 1 needs a launcher that runs jobs in other processes)
    max_failure_rate: float = 0.0
    sampler: Any = MISSING
    pruner: Any = MISSING
    params: Optional[Dict[str, str]] = None
    enqueue: List[Dict[str, Any]] = field(default_factory=list)
    heartbeat_interval: float = 10.0
    heartbeat_grace: float = 120.0


store = ConfigStore.instance()
store.store(group="hydra/sweeper", name="sft_optuna", node=OptunaSweeperConf, provider="sft_sweep")
for name, node in (("tpe", TPESamplerConf), ("gp", GPSamplerConf), ("random", RandomSamplerConf),
                   ("grid", GridSamplerConf)):
    store.store(group="hydra/sweeper/sampler", name=name, node=node, provider="sft_sweep")
for name, node in (("hyperband", HyperbandPrunerConf), ("successive_halving", SuccessiveHalvingPrunerConf),
                   ("median", MedianPrunerConf), ("none", NopPrunerConf)):
    store.store(group="hydra/sweeper/pruner", name=name, node=node, provider="sft_sweep")


def distributions(dims) -> dict:
    import optuna.distributions as d

    out = {}
    for key, dim in dims.items():
        if dim.choices is not None:
            out[key] = d.CategoricalDistribution(dim.choices)
        elif dim.integer:
            out[key] = d.IntDistribution(dim.low, dim.high, log=dim.log)
        else:
            out[key] = d.FloatDistribution(dim.low, dim.high, log=dim.log)
    return out


class OptunaSweeper(Sweeper):
    def __init__(self, **conf) -> None:
        resolved = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                    for k, v in conf.items() if k != "defaults"}
        self.conf = OmegaConf.create(resolved)
        self.config = self.launcher = None
        self.lock = threading.Lock()
        self.stop = False
        self.interrupted = None  # (trial number, why) when a signal stopped the sweep

    def setup(self, *, hydra_context: HydraContext, task_function, config) -> None:
        from sft_sweep.config import register_resolvers

        register_resolvers()
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    # --- the sweep ----------------------------------------------------------------------------------------
    @exits_in_one_line
    def sweep(self, arguments: List[str]) -> None:
        import optuna

        from sft_sweep.optuna_trial import open_storage
        from sft_sweep.report import refresh
        from sft_sweep.run_dir import SweepDir

        conf = self.conf
        self.check(conf)
        self.sweep_dir = SweepDir(Path(self.config.hydra.sweep.dir).resolve())
        self.sweep_dir.path.mkdir(parents=True, exist_ok=True)
        self.dims, self.fixed = parse(OmegaConf.to_container(conf.params) if conf.params else None, arguments)
        self.sweep_dir.write_settings("optuna", self.config.optimized_metric, conf.direction == "minimize",
                                      list(self.dims), OmegaConf.to_container(conf.pruner))
        self.space = distributions(self.dims)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(study_name=conf.study_name, direction=conf.direction,
                                         storage=open_storage(conf.storage, self.sweep_dir.path),
                                         sampler=self.sampler(self.dims, 0), pruner=instantiate(conf.pruner),
                                         load_if_exists=True)
        # Trials in other processes rebuild the pruner from here (a study does not store its pruner).
        self.study.set_user_attr("pruner", OmegaConf.to_container(conf.pruner))
        for params in conf.enqueue:
            self.study.enqueue_trial(OmegaConf.to_container(params), skip_if_exists=True)
        log.info("optuna: study %r in %s, %d of %d trials on record", conf.study_name, self.sweep_dir.path,
                 len(self.counted()), conf.n_trials)
        from sft_sweep.preemption import GracefulStop  # here: transformers is not for Hydra's plugin scan

        self.start_ray_once()
        # Ctrl-C / SIGTERM: a trial running in this process checkpoints and records itself interrupted (its own
        # handler, preemption.GracefulStop); between trials the sweep stops at once. Either way one line, exit 75,
        # and the same command resumes.
        with GracefulStop() as stop:
            stop.phase = "the sweep"
            if conf.n_jobs == 1:
                self.work()  # in this thread, the only one Python delivers signals to
            else:  # trials in other processes (submitit, Ray): a thread waits on each
                workers = [threading.Thread(target=self.work, daemon=True) for _ in range(conf.n_jobs)]
                for worker in workers:
                    worker.start()
                for worker in workers:
                    worker.join()
        self.write_results()
        refresh(self.sweep_dir.path)
        if self.interrupted is not None:
            raise RunInterrupted(f"the sweep stopped: trial {self.interrupted[0]} was interrupted "
                                 f"({self.interrupted[1]}); run the same command again to resume it")
        failed, budget = len(self.failed()), conf.max_failure_rate * conf.n_trials
        if failed > budget:
            raise RuntimeError(f"{failed} trials failed, more than max_failure_rate x n_trials ({budget:g}); "
                               f"see {self.sweep_dir.trials}")

    def start_ray_once(self) -> None:
        """hydra/launcher=ray starts Ray in each launch when it is not running yet; with n_jobs > 1 the worker
        threads would race to start it ("Perhaps you called ray.init twice by accident?"). Start it here, once,
        with the launcher's own `ray.init` settings."""
        launcher = self.config.hydra.launcher
        if not str(launcher.get("_target_", "")).endswith("RayLauncher"):
            return
        import ray

        if not ray.is_initialized():
            ray.init(**OmegaConf.to_container(launcher.ray.init, resolve=True))

    def check(self, conf) -> None:
        """Settings that cannot work, before anything is written."""
        if conf.n_jobs > 1 and type(self.launcher).__name__ == "BasicLauncher":
            raise UserError(f"hydra.sweeper.n_jobs={conf.n_jobs} needs a launcher that runs trials in other processes "
                            f"(hydra/launcher=submitit_local, submitit_slurm or ray), or one worker per GPU: "
                            f"launch/sweep_optuna_gpus.sh")
        budget = conf.pruner.get("max_resource", "auto")
        if budget != "auto" and not (isinstance(budget, int) and budget > 0):
            raise UserError(f"hydra.sweeper.pruner.max_resource={budget}: the pruner needs a trial's full budget in "
                            f"steps (trainer.max_steps), or max_resource=auto")

    def sampler(self, dims, offset: int):
        """The sampler with its seed moved on by `offset`: every worker's sampler starts from the same seed,
        and would propose the same parameters as the others (the samplers keep no other state: the
        study's trials are in storage)."""
        seed = None if self.conf.sampler.get("seed") is None else self.conf.sampler.seed + offset
        if self.conf.sampler._target_.endswith("GridSampler"):
            if any(dim.choices is None for dim in dims.values()):
                raise UserError("hydra/sweeper/sampler=grid needs choice(...) or range(...) dimensions, not interval")
            return instantiate(self.conf.sampler, seed=seed, search_space={k: dim.choices for k, dim in dims.items()})
        return instantiate(self.conf.sampler, seed=seed)

    def work(self) -> None:
        """Take trials until the study has n_trials of them (wait for those running elsewhere to finish)."""
        while not self.stop:
            trial = self.next_trial()
            if trial is not None:
                self.run(trial)
            elif any(t.state.name == "RUNNING" for t in self.study.get_trials(deepcopy=False)):
                time.sleep(min(5.0, self.conf.heartbeat_interval))  # another worker's; it may yet be interrupted
            else:
                return

    # --- the study's trials -------------------------------------------------------------------------------
    def counted(self) -> list:
        """Trials toward n_trials: started ones but the interrupted (which are owed again); enqueued
        trials wait their turn (`ask` takes them first)."""
        return [t for t in self.study.get_trials(deepcopy=False)
                if t.state.name != "WAITING" and not t.user_attrs.get(Status.INTERRUPTED.value)]

    def failed(self) -> list:
        return [t for t in self.counted() if t.state.name == "FAIL"]

    @contextmanager
    def exclusive(self):
        """This worker's threads, and every worker sharing the sweep dir (a lock file: NFS-safe)."""
        from optuna.storages.journal import JournalFileOpenLock

        file_lock = JournalFileOpenLock(str(self.sweep_dir.path / "sweeper"))
        with self.lock:
            file_lock.acquire()
            try:
                yield
            finally:
                file_lock.release()

    def next_trial(self):
        with self.exclusive():
            self.interrupt_stale()
            if len(self.failed()) > self.conf.max_failure_rate * self.conf.n_trials:
                self.stop = True
                return None
            if len(self.counted()) >= self.conf.n_trials:
                return None
            self.study.sampler = self.sampler(self.dims, len(self.study.get_trials(deepcopy=False)))
            trial = self.study.ask(self.space)
            trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
            trial.set_user_attr("heartbeat", time.time())
            return trial

    def interrupt_stale(self) -> None:
        """Running trials whose worker is gone: its process on this host has exited, or no heartbeat for
        heartbeat_grace seconds. One that saved a checkpoint is asked again with the same parameters; that
        run finds the checkpoint (trainer.resume_from_checkpoint: auto) and goes on from it."""
        import optuna


        host = socket.gethostname()
        for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            worker_host, _, pid = str(t.user_attrs.get("worker", ":")).partition(":")
            gone = worker_host == host and pid.isdigit() and not _alive(int(pid))
            silent = time.time() - t.user_attrs.get("heartbeat", 0) > self.conf.heartbeat_grace
            if not (gone or silent):
                continue
            storage = self.study._storage
            # the mark before the state: then it is final
            storage.set_trial_user_attr(t._trial_id, Status.INTERRUPTED.value, True)
            storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
            self.sweep_dir.trial(t.number).set_status(Status.INTERRUPTED, error="its sweep worker stopped while it ran")
            self.interrupt(t, "its sweep worker stopped while it ran")
            log.warning("optuna: trial %d was interrupted (worker %s gone): owed again", t.number,
                        t.user_attrs.get("worker"))

    def interrupt(self, trial, reason: str, run_dir=None) -> None:
        """Record a trial that stopped before its end as interrupted: owed again (not counted toward n_trials, nor
        failed), and, if it saved a checkpoint, its parameters asked next so that trial resumes from it
        (trainer.resume_from_checkpoint: auto finds the same command's checkpoint beside it)."""
        import optuna

        from sft_sweep.preemption import newest_complete

        storage = self.study._storage
        if storage.get_trial(trial._trial_id).state.is_finished() is False:
            storage.set_trial_user_attr(trial._trial_id, Status.INTERRUPTED.value, True)  # first: then it is final
            storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        self.record(trial.number, trial.params, Status.INTERRUPTED, run_dir=run_dir, reason=reason)
        if newest_complete((RunDir(run_dir) if run_dir else self.sweep_dir.trial(trial.number)).checkpoints):
            self.study.enqueue_trial(trial.params)

    # --- one trial -----------------------------------------------------------------------------------------
    def run(self, trial) -> None:
        import optuna

        overrides = self.fixed + as_overrides(trial.params)
        beating = threading.Event()
        heartbeat = threading.Thread(target=self.beat, args=(trial, beating), daemon=True)
        heartbeat.start()
        try:
            [ret] = self.launcher.launch([overrides], initial_job_idx=trial.number)
            error = ret._return_value if ret.status == JobStatus.FAILED else None
        except Exception as exc:  # the launcher itself failed (a cluster refused the job, say), or a signal
            ret, error = None, exc
        finally:
            beating.set()
            heartbeat.join()
        value = ret.return_value if ret is not None and error is None else None
        run_dir = ret.hydra_cfg.hydra.runtime.output_dir if ret is not None and ret.hydra_cfg else None
        if isinstance(error, RunInterrupted):  # a signal: the trial is owed again, and resumes from its checkpoint
            self.interrupt(trial, str(error).splitlines()[0], run_dir)
            if type(self.launcher).__name__ == "BasicLauncher":  # the signal was this process's: the sweep stops
                self.stop, self.interrupted = True, (trial.number, str(error).splitlines()[0])
            return
        reason = None
        if isinstance(error, TrialPruned):
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED, skip_if_finished=True)
            status = Status.PRUNED
        elif error is None and isinstance(value, (int, float)) and math.isfinite(value):
            self.study.tell(trial, float(value), skip_if_finished=True)
            status = Status.COMPLETED
        else:
            reason = f"{type(error).__name__}: {error}" if error is not None else f"returned {value!r}"
            reason = reason.splitlines()[0]
            trial.set_user_attr("reason", reason)
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            status = Status.DIVERGED if isinstance(error, RunDiverged) else Status.FAILED
        self.record(trial.number, trial.params, status, run_dir=run_dir, overrides=overrides,
                    value=value if status == Status.COMPLETED else None, reason=reason)

    def beat(self, trial, done: threading.Event) -> None:
        while not done.wait(self.conf.heartbeat_interval):
            self.study._storage.set_trial_user_attr(trial._trial_id, "heartbeat", time.time())

    # --- records ------------------------------------------------------------------------------------------
    def record(self, number: int, params: dict, status: Status, **extra) -> None:
        self.sweep_dir.record_trial(number, status, params, worker=f"{socket.gethostname()}:{os.getpid()}", **extra)
        log.info("optuna: trial %d %s%s", number, status.label,
                 f" ({extra['value']:.4f})" if isinstance(extra.get("value"), float) else "")

    def status_of(self, trial) -> Status:
        if trial.user_attrs.get(Status.INTERRUPTED.value):
            return Status.INTERRUPTED
        return {"COMPLETE": Status.COMPLETED, "PRUNED": Status.PRUNED, "RUNNING": Status.STARTED}.get(
            trial.state.name, Status.FAILED)

    def write_results(self) -> None:
        from sft_sweep.logger import log_sweep_summary

        trials = [t for t in self.study.get_trials(deepcopy=False) if t.state.name != "WAITING"]
        counts = Counter(self.status_of(t) for t in trials)
        if not counts[Status.COMPLETED]:
            self.sweep_dir.write_results("optuna", None, [], counts)
            log.error("optuna: no trial completed; see %s", self.sweep_dir.trials)
            return
        best = self.study.best_trial
        row = {**self.sweep_dir.trial_rows().get(best.number, {}), "trial": best.number, "params": best.params,
               "value": best.value}
        row.setdefault("run_dir", str(self.sweep_dir.trial(best.number).path))
        self.sweep_dir.write_results("optuna", row, as_run_overrides(self.fixed, best.params), counts)
        log_sweep_summary(OmegaConf.to_container(self.config.logger, resolve=True), self.sweep_dir.path)
        log.info("optuna: best %s=%s (trial %d, %s)", self.config.optimized_metric, best.value, best.number,
                 row["run_dir"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
