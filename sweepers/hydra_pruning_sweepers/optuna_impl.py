"""The `optuna_pruning` sweeper's work (its config: optuna_sweeper.py).

One study, many workers: every worker (this command started again, on another GPU or machine with the same
sweep dir and storage) takes the next trials under a lock until `n_trials` exist, counting those running
elsewhere; a running trial carries a heartbeat. A trial that a signal, a preemption or its job's death
interrupted is recorded `interrupted` and launched again as the same trial (number, parameters, run dir), where it
resumes from its own newest checkpoint; a trial whose worker died (its process gone, or its heartbeat older than
`heartbeat_grace` s) is taken over the same way by the next worker. That is also how re-running the same command
resumes a sweep. `max_failure_rate` x `n_trials` failed trials (crashed or diverged) stop the sweep.

Each trial is a Hydra job whose number is its Optuna trial number (optuna_trial.report finds its trial by it).
On the basic launcher trials run in this process, `n_jobs` asked at once; on a launcher that runs jobs in other
processes (submitit, Ray) a thread per `n_jobs` waits on each, so a pruned trial frees its slot at once.
"""

import logging
import math
import os
import socket
import threading
import time
from collections import Counter
from contextlib import contextmanager
from itertools import product
from pathlib import Path
from typing import Any, List, Optional

from hydra.core.plugins import Plugins
from hydra.types import HydraContext
from hydra.utils import get_method, instantiate
from omegaconf import OmegaConf

from hydra_pruning_sweepers.launchers import (
    LIVE_STATES,
    SlurmJobs,
    died_without_result,
    on_ray,
    outcome,
    runs_in_this_process,
)
from hydra_pruning_sweepers.optuna_trial import (
    PRUNER_ATTR,
    build_pruner,
    open_storage,
    pruner_spec,
    study_name,
    take_up,
)
from hydra_pruning_sweepers.records import (
    Status,
    StopOnSignal,
    SweepDir,
    TrialDiverged,
    TrialInterrupted,
    TrialPruned,
    UserError,
    exits_in_one_line,
)
from hydra_pruning_sweepers.space import as_overrides, as_run_overrides, grid_size, parse

log = logging.getLogger("hydra_plugins.hydra_pruning_sweepers.optuna_sweeper")
INTERRUPTED = Status.INTERRUPTED.value  # the user attribute that marks an interrupted trial (owed again)


def interrupted(error) -> bool:
    """A trial stopped before its end by a signal (scancel, preemption, Ctrl-C: TrialInterrupted), or whose job died
    without a result (kill -9, a node lost)."""
    return isinstance(error, TrialInterrupted) or died_without_result(error)


def has_checkpoint(run_dir) -> bool:
    """The trial's run dir holds a checkpoint to resume from (`checkpoint-<step>` folders, the Hugging Face
    Trainer's name, anywhere under it)."""
    return run_dir is not None and any(Path(run_dir).glob("**/checkpoint-*"))


def motpe_removed(*args, **kwargs):
    raise UserError("The 'motpe' sampler was removed in Optuna 4.0: use hydra/sweeper/sampler=tpe (TPESampler "
                    "handles multi-objective studies now) or nsgaii")


class OptunaSweeperImpl:
    def __init__(self, conf: dict) -> None:
        resolved = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                    for k, v in conf.items() if k != "defaults"}
        self.conf = OmegaConf.create(resolved)
        directions = self.conf.direction
        self.directions = [directions] if isinstance(directions, str) else list(directions)
        metric = self.conf.metric
        self.metrics = ([metric] if isinstance(metric, str) else list(metric)) if metric else (
            ["value"] if len(self.directions) == 1 else [f"value_{i}" for i in range(len(self.directions))])
        self.config = self.launcher = None
        self.lock = threading.Lock()
        self.trial_ended = threading.Condition()  # a thread waiting on running trials looks again when one ends
        self.stop = False
        self.interrupted = None  # (trial number, why) when a signal stopped the sweep
        self.last_failure = None  # (trial number, why): the failure budget's one line names it

    def setup(self, *, hydra_context: HydraContext, task_function, config) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)
        self.in_process = runs_in_this_process(config)  # the launcher runs jobs here, one after the other
        self.slurm = SlurmJobs(self.launcher, config)

    # --- the sweep ----------------------------------------------------------------------------------------
    @exits_in_one_line
    def sweep(self, arguments: List[str]) -> None:
        import optuna

        conf = self.conf
        self.check(conf)
        self.sweep_dir = SweepDir(Path(self.config.hydra.sweep.dir).resolve())
        self.dims, self.fixed = parse(OmegaConf.to_container(conf.params) if conf.params else None, arguments)
        self.space = {key: dim.to_optuna() for key, dim in self.dims.items()}
        self.grid = self.grid_points()
        self.n_trials = conf.n_trials if self.grid is None else min(conf.n_trials, len(self.grid))
        if self.grid is not None and conf.n_trials > len(self.grid):
            log.info("optuna: the grid has %d points: n_trials=%d capped at %d", len(self.grid), conf.n_trials,
                     len(self.grid))
        self.extend_space = get_method(conf.custom_search_space) if conf.custom_search_space else None
        self.on_record = get_method(conf.on_record) if conf.on_record else None
        spec = pruner_spec(OmegaConf.to_container(conf.pruner))
        try:
            pruner = build_pruner(spec)
        except (ValueError, TypeError) as exc:
            raise UserError(f"hydra.sweeper.pruner: {exc}") from None
        self.sweep_dir.path.mkdir(parents=True, exist_ok=True)
        self.sweep_dir.write_settings("optuna", self.metrics, self.directions, list(self.dims),
                                      {"_target_": f"{spec['module']}.{spec['name']}", **spec["kwargs"]})
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # Workers started at once would race to create the storage's tables (sqlite: "table studies already
        # exists") and the study: one at a time, under the sweep dir's lock.
        with self.exclusive():
            self.storage = open_storage(conf.storage, self.sweep_dir.path)
            self.study = optuna.create_study(study_name=study_name(conf, self.sweep_dir.path),
                                             directions=self.directions, load_if_exists=True, pruner=pruner,
                                             storage=self.storage,
                                             sampler=self.sampler(0))
            self.study.set_user_attr(PRUNER_ATTR, spec)  # trials rebuild it from here (a study keeps no pruner)
            for params in conf.enqueue:
                self.study.enqueue_trial(OmegaConf.to_container(params), skip_if_exists=True)
        log.info("optuna: study %r in %s, %d of %d trials on record", self.study.study_name, self.sweep_dir.path,
                 len(self.counted()), self.n_trials)
        self.start_ray_once()
        if trouble := self.slurm.accounting_trouble():  # said once, before the first job
            log.warning("optuna: SLURM accounting does not answer (sacct: %s): a trial whose job is cancelled or "
                        "dies cannot be seen to end, and is not launched again", trouble)
        # Ctrl-C / SIGTERM: a trial running in this process checkpoints and records itself interrupted (its own
        # handler, preemption.GracefulStop); between trials the sweep stops at once. Either way one line, exit 75,
        # and the same command resumes.
        with StopOnSignal("the sweep"):
            if self.in_process:
                self.work(conf.n_jobs)  # in this thread, the only one Python delivers signals to
            else:  # trials in other processes (submitit, Ray): a thread waits on each
                workers = [threading.Thread(target=self.work, args=(1,), daemon=True) for _ in range(conf.n_jobs)]
                for worker in workers:
                    worker.start()
                for worker in workers:
                    worker.join()
        self.write_results()
        if self.interrupted is not None:
            raise TrialInterrupted(f"the sweep stopped: trial {self.interrupted[0]} was interrupted "
                                 f"({self.interrupted[1]}); run the same command again to resume it")
        failed, budget = len(self.failed()), conf.max_failure_rate * self.n_trials
        if failed > budget:
            number, why = self.last_failure or ("?", "see trials.jsonl")
            raise UserError(f"{failed} of {len(self.counted())} trials failed, more than max_failure_rate="
                            f"{conf.max_failure_rate} x n_trials={self.n_trials} allows; the last, trial {number}: "
                            f"{why} (see {self.sweep_dir.trials})")

    def check(self, conf) -> None:
        """Settings that cannot work, in one line, before anything is written."""
        if conf.sampler.get("_target_", "").endswith("motpe_removed"):
            motpe_removed()
        if not 0.0 <= conf.max_failure_rate <= 1.0:
            raise UserError(f"hydra.sweeper.max_failure_rate={conf.max_failure_rate}: a share, from 0 to 1")
        if conf.n_jobs < 1:
            raise UserError(f"hydra.sweeper.n_jobs={conf.n_jobs}: at least 1")
        if conf.max_relaunches < 0:
            raise UserError(f"hydra.sweeper.max_relaunches={conf.max_relaunches}: 0 or more")
        bad = [d for d in self.directions if d not in ("minimize", "maximize")]
        if bad:
            raise UserError(f"hydra.sweeper.direction={conf.direction}: each direction is minimize or maximize")
        if len(self.metrics) != len(self.directions):
            raise UserError(f"hydra.sweeper.metric={self.metrics} names {len(self.metrics)} values for "
                            f"{len(self.directions)} directions {self.directions}")
        pruning = not conf.pruner.get("_target_", "").endswith("NopPruner")
        if pruning and len(self.directions) > 1:
            raise UserError(f"hydra/sweeper/pruner: Optuna prunes single-objective studies only, and this one has "
                            f"{len(self.directions)} objectives; use hydra/sweeper/pruner=none")
        for key in ("max_resource", "min_resource"):
            value = conf.pruner.get(key, "auto")
            if value != "auto" and not (isinstance(value, int) and value > 0):
                raise UserError(f"hydra.sweeper.pruner.{key}={value}: a number of steps (a positive integer), or auto")

    def sampler(self, offset: int):
        """The sampler with its seed moved on by `offset` (the study's trial count): every worker's sampler starts
        from the same seed and would propose the same parameters as the others; the samplers keep no other state
        (the study's trials are in storage). A grid's sampler keeps its seed: it runs the points in our order."""
        conf = self.conf.sampler
        seed = conf.get("seed")
        if conf._target_.endswith("GridSampler"):
            return instantiate(conf, search_space={k: dim.values() for k, dim in self.dims.items()})
        return instantiate(conf, seed=None if seed is None else seed + offset)

    def grid_points(self) -> Optional[list]:
        """Every point of the grid in one fixed order (the dimensions', each's values in order), or None when the
        sampler is not the grid."""
        if not self.conf.sampler._target_.endswith("GridSampler"):
            return None
        if grid_size(self.dims) is None:
            raise UserError("hydra/sweeper/sampler=grid needs dimensions with a finite set of values: choice(...), "
                            "range(...), not interval(...)")
        keys = list(self.dims)
        return [dict(zip(keys, values)) for values in product(*(self.dims[k].values() for k in keys))]

    def start_ray_once(self) -> None:
        """hydra/launcher=ray starts Ray in each launch when it is not running yet; with n_jobs > 1 the worker
        threads would race to start it ("Perhaps you called ray.init twice by accident?"). Start it here, once,
        with the launcher's own `ray.init` settings."""
        if not on_ray(self.launcher):
            return
        import ray

        if not ray.is_initialized():
            ray.init(**OmegaConf.to_container(self.config.hydra.launcher.ray.init, resolve=True))

    def work(self, batch: int) -> None:
        """Take `batch` trials at a time until the study has n_trials (wait for those running elsewhere)."""
        while not self.stop:
            items = self.next_trials(batch)
            for i, (trial, job) in enumerate(items):
                if self.stop:  # a signal stopped the sweep: the rest of the batch never started (adopted on resume)
                    for left, _ in items[i:]:
                        self.record(left.number, left.params, Status.INTERRUPTED, reason="not started: the sweep "
                                    "stopped")
                    break
                self.run(trial, job)
                with self.trial_ended:
                    self.trial_ended.notify_all()
            if items:
                continue
            with self.trial_ended:  # (checked under it: an end between the check and the wait is not missed)
                if not any(t.state.name == "RUNNING" for t in self.study.get_trials(deepcopy=False)):
                    return
                # another thread's trial, or another worker's (it may yet be interrupted, and adopted): look again when
                # one of this worker's ends, or in 5 s
                self.trial_ended.wait(min(5.0, self.conf.heartbeat_interval))

    # --- the study's trials -------------------------------------------------------------------------------
    def counted(self) -> list:
        """Trials toward n_trials: started ones (running ones too); enqueued trials wait their turn (`ask` takes them
        first). (A FAIL trial marked interrupted is an earlier version's record of an interrupted trial.)"""
        return [t for t in self.study.get_trials(deepcopy=False)
                if t.state.name != "WAITING" and not t.user_attrs.get(INTERRUPTED)]

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

    def next_trials(self, batch: int) -> list:
        """Up to `batch` (trial, job) to run: first running trials whose worker is gone (adopted: run again, or their
        SLURM job waited on when it still runs), then new ones."""
        with self.exclusive():
            items = self.adopt_stale(batch)
            while len(items) < batch:
                if len(self.failed()) > self.conf.max_failure_rate * self.n_trials:
                    self.stop = True
                    break
                if len(self.counted()) >= self.n_trials:
                    break
                if self.grid is not None and not self.enqueue_next_grid_point():
                    break
                self.study.sampler = self.sampler(len(self.study.get_trials(deepcopy=False)))
                trial = self.study.ask(self.space)
                if self.extend_space is not None:  # custom_search_space: more parameters, suggested by the app
                    self.extend_space(self.config, trial)
                self.claim(trial)
                items.append((trial, None))
            return items

    def claim(self, trial) -> None:
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("heartbeat", time.time())

    def enqueue_next_grid_point(self) -> bool:
        """The next trial's grid point: an enqueued one, else the first point in the grid's order that no trial has
        taken. False when none is left."""
        trials = self.study.get_trials(deepcopy=False)
        if any(t.state.name == "WAITING" for t in trials):
            return True
        taken = [t.params for t in trials if not t.user_attrs.get(INTERRUPTED)]
        point = next((p for p in self.grid if p not in taken), None)
        if point is not None:
            self.study.enqueue_trial(point)
        return point is not None

    def adopt_stale(self, limit: int) -> list:
        """Running trials whose worker is gone (its process on this host has exited, or no heartbeat for
        heartbeat_grace seconds): this worker takes them over. A trial whose SLURM job still runs is waited on (its
        job is never submitted twice); any other is launched again as the same trial, in its own run dir, where
        it resumes from its newest complete checkpoint."""
        import optuna

        host, adopted = socket.gethostname(), []
        for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            worker_host, _, pid = str(t.user_attrs.get("worker", ":")).partition(":")
            gone = worker_host == host and pid.isdigit() and not _alive(int(pid))
            silent = time.time() - t.user_attrs.get("heartbeat", 0) > self.conf.heartbeat_grace
            if not (gone or silent) or len(adopted) == limit:
                continue
            gone_worker = t.user_attrs.get("worker")  # (before claim(): the cached trial shows the new worker after)
            trial = take_up(self.study, self.storage, t.number)
            self.claim(trial)
            job, state = self.slurm.to_adopt(self.sweep_dir.trial_dir(t.number))
            log.warning("optuna: trial %d's worker %s is gone: %s", t.number, gone_worker,
                        f"waiting for its SLURM job {job.job_id}, still {state}" if job and state in LIVE_STATES else
                        f"its SLURM job {job.job_id} ended ({state}): reading its result" if job else
                        "running it again")
            adopted.append((trial, job))
        return adopted

    # --- one trial -----------------------------------------------------------------------------------------
    def run(self, trial, job=None) -> None:
        """Launch the trial (or wait for its running `job`), launched again each time a signal, a cluster's
        preemption or a job's death interrupts it (it resumes from its own checkpoints), until it ends; then tell
        the study how. On the basic launcher a signal was this process's own: the sweep stops (resumed later)."""
        import optuna

        overrides = self.fixed + as_overrides(trial.params)
        beating = threading.Event()
        heartbeat = threading.Thread(target=self.beat, args=(trial, beating), daemon=True)
        heartbeat.start()
        relaunch_limit, limit = None, self.conf.max_relaunches
        try:
            for attempt in range(limit + 1):
                ret, error = self.slurm.wait(job) if job is not None else self.launch(trial, overrides)
                if not interrupted(error):
                    break
                run_dir = self.run_dir_of(ret, trial)
                # the run's own line (which signal, at which step), or its job's end
                why = self.slurm.why_died(run_dir) if died_without_result(error) else str(error).splitlines()[0]
                if attempt == limit:
                    relaunch_limit = (f"interrupted {attempt + 1} time{'s' * (attempt > 0)}, and "
                                      f"hydra.sweeper.max_relaunches={limit}: the last time {why}")
                    break
                self.record(trial.number, trial.params, Status.INTERRUPTED, run_dir=run_dir, reason=why)
                if self.in_process or self.stop:  # this process was stopped: the sweep ends, the trial is resumed
                    self.stop, self.interrupted = True, (trial.number, why)
                    return
                job = self.slurm.requeued(ret, run_dir)
                log.warning("optuna: trial %d interrupted (%s): %s", trial.number, why,
                            f"SLURM requeued its job {job.job_id}, waiting for it" if job else
                            "launched again, it resumes from its checkpoint" if has_checkpoint(run_dir) else
                            "launched again (it saved no checkpoint: from the start)")
        finally:
            beating.set()
            heartbeat.join()
        run_dir = self.run_dir_of(ret, trial)
        if isinstance(error, (optuna.TrialPruned, TrialPruned)):  # optuna's, or an app's that kept its records
            self.tell(trial, state=optuna.trial.TrialState.PRUNED)
            self.record(trial.number, trial.params, Status.PRUNED, run_dir=run_dir, overrides=overrides,
                        pruned_at_step=self.last_step(trial.number))
            return
        values, reason = self.values(ret.return_value if ret is not None and error is None else None, error)
        reason = relaunch_limit or reason
        if values is not None:
            self.tell(trial, values=values)
            self.record(trial.number, trial.params, Status.COMPLETED, run_dir=run_dir, overrides=overrides,
                        value=values[0] if len(values) == 1 else values)
            return
        trial.set_user_attr("reason", reason)
        self.tell(trial, state=optuna.trial.TrialState.FAIL)
        self.last_failure = (trial.number, reason)
        self.record(trial.number, trial.params, Status.DIVERGED if isinstance(error, TrialDiverged) else Status.FAILED,
                    run_dir=run_dir, overrides=overrides, reason=reason)
        log.warning("optuna: trial %d failed (%s): %s", trial.number, run_dir or "no run dir", reason)

    def launch(self, trial, overrides: list) -> tuple:
        """(JobReturn or None, the task's or launcher's exception or None)."""
        try:
            [ret] = self.launcher.launch([overrides], initial_job_idx=trial.number)
            return outcome(ret)
        except Exception as exc:  # the launcher itself failed: a cluster refused the job, a job died, a signal
            return None, exc

    def run_dir_of(self, ret, trial) -> str:
        return (ret.hydra_cfg.hydra.runtime.output_dir if ret is not None and ret.hydra_cfg
                else str(self.sweep_dir.trial_dir(trial.number)))

    def values(self, returned: Any, error: Optional[BaseException]) -> tuple[Optional[list], Optional[str]]:
        """(the trial's objective values, None) or (None, why it failed): numbers, numpy scalars and numeric
        strings are taken as hydra-optuna-sweeper takes them (float()); a non-finite value is a failure."""
        if error is not None:
            return None, f"{type(error).__name__}: {error}".splitlines()[0]
        raw = [returned] if len(self.directions) == 1 else returned
        try:
            values = [float(v) for v in raw]
        except (TypeError, ValueError):
            return None, (f"returned {returned!r}: not a number" if len(self.directions) == 1 else
                          f"returned {returned!r}: not {len(self.directions)} numbers, one per objective")
        if len(values) != len(self.directions):
            return None, f"returned {len(values)} values for {len(self.directions)} objectives"
        if not all(math.isfinite(v) for v in values):
            return None, f"returned {returned!r}: not finite"
        return values, None

    def tell(self, trial, **kwargs) -> None:
        try:
            self.study.tell(trial, skip_if_finished=True, **kwargs)
        except RuntimeError as exc:  # the grid sampler stops the study when its last point is told; done
            if "Study.stop" not in str(exc):
                raise

    def beat(self, trial, done: threading.Event) -> None:
        while not done.wait(self.conf.heartbeat_interval):
            trial.set_user_attr("heartbeat", time.time())

    # --- records ------------------------------------------------------------------------------------------
    def last_step(self, number: int) -> Optional[int]:
        """The last step trial `number` reported (optuna_trial.report), or None."""
        [frozen] = [t for t in self.study.get_trials(deepcopy=False) if t.number == number]
        return max(frozen.intermediate_values, default=None)

    def record(self, number: int, params: dict, status: Status, **extra) -> None:
        self.sweep_dir.record_trial(number, status, params, steps=self.last_step(number),
                                    worker=f"{socket.gethostname()}:{os.getpid()}", **extra)
        self.recorded(final=False)
        if status.failed or status == Status.INTERRUPTED:
            return  # (its line, with the reason and what happens next, is the caller's)
        value = extra.get("value")
        log.info("optuna: trial %d %s%s", number, status.label, f" ({value:.6g})" if isinstance(value, float) else
                 f" ({', '.join(f'{v:.6g}' for v in value)})" if isinstance(value, list) else "")

    def recorded(self, final: bool) -> None:
        """hydra.sweeper.on_record, the app's hook, after a trial's record or the results."""
        if self.on_record is not None:
            self.on_record(str(self.sweep_dir.path), final)

    def status_of(self, trial) -> Status:
        if trial.user_attrs.get(INTERRUPTED):
            return Status.INTERRUPTED
        return {"COMPLETE": Status.COMPLETED, "PRUNED": Status.PRUNED, "RUNNING": Status.STARTED}.get(
            trial.state.name, Status.FAILED)

    def write_results(self) -> None:
        """optimization_results.yaml: the best trial (single objective), or the Pareto front and the front's trial
        best on the first objective (several objectives), and the trials by status."""
        trials = [t for t in self.study.get_trials(deepcopy=False) if t.state.name != "WAITING"]
        counts = Counter(self.status_of(t) for t in trials)
        rows = self.sweep_dir.trial_rows()

        def row(t) -> dict:
            return {"trial": t.number, "params": t.params, "value": t.value if len(self.directions) == 1 else t.values,
                    "run_dir": rows.get(t.number, {}).get("run_dir") or str(self.sweep_dir.trial_dir(t.number))}

        if not counts[Status.COMPLETED]:
            self.sweep_dir.write_results("optuna", None, [], counts)
            self.recorded(final=True)
            log.error("optuna: no trial completed; see %s", self.sweep_dir.trials)
            return
        if len(self.directions) == 1:
            best, extra = self.study.best_trial, {}
        else:
            front = sorted(self.study.best_trials, key=lambda t: t.number)
            sign = 1 if self.directions[0] == "minimize" else -1
            best = min(front, key=lambda t: sign * t.values[0])
            extra = {"solutions": [row(t) for t in front],
                     "best_trial_by": f"the Pareto front's best {self.metrics[0]}"}
        self.sweep_dir.write_results("optuna", row(best), as_run_overrides(self.fixed, best.params), counts, extra)
        self.recorded(final=True)
        log.info("optuna: best %s=%s (trial %d, %s)", ",".join(self.metrics),
                 best.value if len(self.directions) == 1 else best.values, best.number, row(best)["run_dir"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
