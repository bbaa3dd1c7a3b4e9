"""What the Optuna sweeper needs to know of the launcher that runs its trials, in one place: whether trials run in
this process, and -- on SLURM (hydra/launcher=submitit_slurm) -- which job runs a trial, whether it still runs,
ended with a result, died without one, or was requeued by SLURM itself; waiting for one. The generic sweep loop
(optuna_impl.py) asks these questions and never looks at a launcher's class or a job's files.

Only public APIs: the launcher plugins' classes, Hydra's config group choice (`hydra/launcher=basic`), submitit's
Job (state via `get_info`, `done()`, `result()`), Hydra's JobReturn.
"""

import contextlib
import io
import subprocess
import time
from pathlib import Path
from typing import Optional

from hydra.core.utils import JobStatus
from omegaconf import OmegaConf

# A SLURM job in one of these states will run (again): never submitted twice, waited on.
LIVE_STATES = ("PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
               "SUSPENDED", "RESIZING")
POLL_S = 2.0


def runs_in_this_process(config) -> bool:
    """Hydra's basic launcher (`hydra/launcher=basic`, Hydra's default; its class has no public import path): jobs
    one after the other in this process (signals reach the trial itself)."""
    return (OmegaConf.select(config, "hydra.runtime.choices") or {}).get("hydra/launcher", "basic") == "basic"


def on_slurm(launcher) -> bool:
    try:
        from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
    except ImportError:  # the submitit extra is not installed: no SLURM launcher can run
        return False
    return isinstance(launcher, SlurmLauncher)


def on_ray(launcher) -> bool:
    try:
        from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher
    except ImportError:  # the ray extra is not installed
        return False
    return isinstance(launcher, RayLauncher)


def outcome(ret) -> tuple:
    """(the job's JobReturn, the task's exception when it failed, else None). JobReturn.return_value raises the
    task's exception for a failed job (Hydra's public way to get it), after writing "Error executing job with
    overrides: [...]" to stderr: the sweeper says each failure in its own line (trial, run dir, the exception's
    line), so that write goes nowhere."""
    if ret.status != JobStatus.FAILED:
        return ret, None
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            ret.return_value
    except Exception as exc:  # noqa: BLE001 -- the task's own exception, whatever it is
        return ret, exc
    return ret, None


def died_without_result(error) -> bool:
    """A job that ended with no result to read: killed (kill -9, the OOM killer, a lost node), cancelled."""
    try:
        from submitit.core.utils import FailedJobError, UncompletedJobError
    except ImportError:
        return False
    # (submitit's FailedJobError, a job that raised, is an UncompletedJobError too: it left a result, an error)
    return isinstance(error, UncompletedJobError) and not isinstance(error, FailedJobError)


class SlurmJobs:
    """The SLURM jobs of a sweep's trials (nothing to say on other launchers: every method answers None)."""

    def __init__(self, launcher, config):
        self.active = on_slurm(launcher)
        # where submitit keeps its jobs' files: the launcher's own documented setting
        self.folder = OmegaConf.select(config, "hydra.launcher.submitit_folder") if self.active else None

    def accounting_trouble(self) -> Optional[str]:
        """Why SLURM's accounting (sacct) does not answer, or None. submitit learns a job's end from it: without it
        a cancelled or killed job looks queued forever."""
        if not self.active:
            return None
        try:
            probe = subprocess.run(["sacct", "-n", "-X", "-j", "1", "-o", "JobID"], capture_output=True, text=True,
                                   timeout=60)
            return probe.stderr.strip().splitlines()[-1] if probe.returncode else None
        except (OSError, subprocess.TimeoutExpired) as exc:
            return str(exc)

    def job(self, job_id):
        if not self.active or not job_id:
            return None
        import submitit

        return submitit.SlurmJob(folder=str(self.folder), job_id=str(job_id))

    @staticmethod
    def state(job) -> str:
        """The job's state as accounting has it now (UNKNOWN when sacct does not answer)."""
        try:
            return str(job.get_info(mode="force").get("State", "UNKNOWN")).split()[0]
        except Exception:  # noqa: BLE001 -- sacct not answering: not known to be running
            return "UNKNOWN"

    def job_of(self, run_dir) -> Optional[object]:
        """The job that ran (or runs) a trial: its id is in the trial's saved Hydra config."""
        hydra_yaml = Path(run_dir) / ".hydra" / "hydra.yaml"
        if not self.active or not hydra_yaml.is_file():
            return None
        return self.job(OmegaConf.select(OmegaConf.load(hydra_yaml), "hydra.job.id"))

    def to_adopt(self, run_dir) -> tuple:
        """(job, its state) for a trial taken over from a gone worker: a job still running or queued (waited on,
        never submitted twice), or one that ended while no sweeper watched it and left its result (read, never run
        again); else (None, None): the trial is launched again."""
        job = self.job_of(run_dir)
        if job is None:
            return None, None
        state = self.state(job)
        if state in LIVE_STATES or (state == "COMPLETED" and job.done()):
            return job, state
        return None, None

    def requeued(self, ret, run_dir) -> Optional[object]:
        """After an interrupted trial: its job, when SLURM itself requeued it (scontrol requeue, a preemption with
        requeue) -- then its next run, not a new job, goes on with the trial."""
        job = self.job(OmegaConf.select(ret.hydra_cfg, "hydra.job.id")) if ret is not None and ret.hydra_cfg else \
            self.job_of(run_dir)
        if job is None:
            return None
        state, deadline = self.state(job), time.time() + 120
        while state in ("RUNNING", "COMPLETING", "CONFIGURING") and time.time() < deadline:  # still ending its run
            time.sleep(POLL_S)
            state = self.state(job)
        return job if state in LIVE_STATES else None

    def wait(self, job) -> tuple:
        """(JobReturn or None, exception or None) of a job this sweeper did not launch, or launch last. Its end is
        waited for in accounting first: a requeued job's first run left a result that is not the trial's."""
        while self.state(job) in LIVE_STATES:
            time.sleep(POLL_S)
        try:
            return outcome(job.result())
        except Exception as exc:  # noqa: BLE001 -- it died without a result
            return None, exc

    def why_died(self, run_dir) -> str:
        """One line for a trial whose job died without a result: which job, and its state in accounting."""
        job = self.job_of(run_dir)
        if job is None:
            return "its job ended without a result"
        return f"its job {job.job_id} ended without a result (state {self.state(job)})"
