"""What both sweepers write and how they end, in one place: the sweep dir's files, a trial's status words, the
errors a person reads as one line, and signals turned into such an error.

    <sweep dir>/                  hydra.sweep.dir
      sweep.yaml                  what the sweep optimizes: sweeper, metric(s), direction(s), searched keys, pruner
      trials.jsonl                a row per ended trial (a resumed trial's newer row wins)
      trials.md                   the ASHA sweep's table of them
      optimization_results.yaml   the best trial (or the Pareto front), the overrides that run it alone, the counts
      <N>/                        trial N's Hydra job dir (hydra.sweep.subdir: ${hydra.job.num}, Hydra's default)
        tune_progress.jsonl       an ASHA trial's reports, written before each is sent (asha_trial.report)
        tune_outcome.json         how an ASHA trial's task ended, when it ended by itself (ASHA kills the others)

This module imports nothing but the standard library and PyYAML (Hydra's own dependency): an app's trial, the
sweepers and an app's reports all read the same words from it without importing Optuna or Ray.
"""

import functools
import json
import os
import signal
import sys
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import NoReturn, Optional

import yaml

PROGRESS = "tune_progress.jsonl"  # in a trial's dir: its reports to Ray Tune
OUTCOME = "tune_outcome.json"  # in a trial's dir: {"status": completed | diverged | failed, "reason": ...}


# --- how a trial ended -----------------------------------------------------------------------------------------
class Status(StrEnum):
    """A trial's (or an app's run's) status, as the records spell it.

    started      it is going -- or was killed without a word
    completed    it ran to its end and returned its value
    pruned       the Optuna pruner stopped it early
    stopped      ASHA stopped it early
    diverged     the app judged it diverged (TrialDiverged): counted failed
    failed       an error ended it
    interrupted  a signal (Ctrl-C, SIGTERM, a cluster's preemption) stopped it: the same command resumes it
    """

    STARTED = "started"
    COMPLETED = "completed"
    PRUNED = "pruned"
    STOPPED = "stopped"
    DIVERGED = "diverged"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    @property
    def label(self) -> str:
        """The word a person reads (console, tables)."""
        return "stopped early" if self == Status.STOPPED else self.value

    @property
    def cut_short(self) -> bool:
        """A sweep ended it early on purpose: its curve stops at a rung."""
        return self in (Status.PRUNED, Status.STOPPED)

    @property
    def failed(self) -> bool:
        """Counts against a sweep's failure budget."""
        return self in (Status.FAILED, Status.DIVERGED)

    @property
    def resumable(self) -> bool:
        """It never reached its end: the same command may resume it."""
        return self in (Status.STARTED, Status.INTERRUPTED, Status.FAILED)


# --- errors read as one line -----------------------------------------------------------------------------------
class UserError(Exception):
    """Bad input or a stop a person caused: printed as one line, no traceback, exit code `exit_code`."""

    exit_code = 2


class TrialInterrupted(UserError):
    """A signal stopped a trial (or the sweep) before its end; the same command resumes it. Exit code 75
    (EX_TEMPFAIL): schedulers that requeue on it give the job back. A sweeper launches such a trial again."""

    exit_code = 75


class TrialDiverged(UserError):
    """Raised by an app whose trial diverged (its loss blew up): recorded `diverged`, counted failed."""

    exit_code = 3


class TrialPruned(UserError):
    """Raised by an app that was told to stop (optuna_trial.report(..., stop=False) returned True) once it has
    written its own records: to the Optuna sweeper the same as optuna.TrialPruned."""


def exit_in_one_line(exc: UserError) -> NoReturn:
    """`error: ...` on stderr, no traceback, and the error's exit code."""
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(exc.exit_code) from None


def exits_in_one_line(function):
    """A UserError out of `function` (a sweeper's sweep, which Hydra would print with its traceback) ends the
    process by exit_in_one_line."""

    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except UserError as exc:
            exit_in_one_line(exc)

    return wrapped


# --- signals ---------------------------------------------------------------------------------------------------
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)  # a kill or scancel, Ctrl-C, submitit's preemption notice


class StopOnSignal:
    """`with StopOnSignal() as stop:` -- a signal raises `error` (TrialInterrupted) where the program is, naming
    `stop.phase`. A subclass that can stop more gently (an app at the end of a training step) sets `deferred` while
    it can and acts on `received`. A second signal always stops at once. Outside the main thread (where Python
    delivers no signal) nothing changes."""

    error = TrialInterrupted

    def __init__(self, phase: str = "setup"):
        self.received = None
        self.deferred = False  # True: the first signal is only noted (the subclass acts on it)
        self.phase = phase
        self.previous = {}

    def __enter__(self):
        try:
            self.previous = {s: signal.signal(s, self.handle) for s in SIGNALS}
        except ValueError:  # not the main thread
            self.previous = {}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.received is not None:  # the second signal: at once
            raise self.error(f"stopped at once by a second {name} during {self.phase}; run the same command "
                             f"again to resume from its newest checkpoint")
        self.received = name
        if not self.deferred:
            raise self.error(f"stopped by {name} during {self.phase}; run the same command again to resume")
        self.noted(name)

    def noted(self, name: str) -> None:
        """A deferred first signal (see `deferred`)."""


# --- files -----------------------------------------------------------------------------------------------------
@functools.cache
def umask() -> int:
    """The process's umask (read once: os.umask can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: Path, text: str) -> None:
    """Write via a temp file + rename, so a crash never leaves half a file; mode as the umask says."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_jsonl(path: Path, row: dict) -> None:
    with Path(path).open("a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class SweepDir:
    """hydra.sweep.dir: one Hydra job dir per trial plus the sweep's records (the module docstring).

    A trial is its number everywhere: the sweeper launches it as Hydra job number N, so its dir is the job's
    (<sweep dir>/N with `hydra.sweep.subdir: ${hydra.job.num}`, Hydra's default) and its row in trials.jsonl says
    where that is."""

    def __init__(self, path):
        self.path = Path(path)

    results = property(lambda self: self.path / "optimization_results.yaml")
    trials = property(lambda self: self.path / "trials.jsonl")
    trials_table = property(lambda self: self.path / "trials.md")
    settings = property(lambda self: self.path / "sweep.yaml")

    def trial_dir(self, number: int) -> Path:
        """Trial `number`'s dir: where its row says, else <sweep dir>/<number>."""
        row = self.trial_rows().get(number)
        return Path(row["run_dir"]) if row and row.get("run_dir") else self.path / str(number)

    def progress(self, number: int) -> list[dict]:
        """Trial `number`'s reports to Ray Tune (an ASHA trial's, PROGRESS in its dir)."""
        return read_jsonl(self.trial_dir(number) / PROGRESS)

    def outcome(self, number: int) -> Optional[dict]:
        """How trial `number`'s task ended (an ASHA trial's, OUTCOME in its dir), or None: it never ended by
        itself."""
        path = self.trial_dir(number) / OUTCOME
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def write_settings(self, sweeper: str, metrics: list[str], directions: list[str], params: list[str],
                       early_stopping: dict) -> None:
        """What the sweep optimizes (one metric and direction, or one per objective), the searched keys, and
        `early_stopping`: the pruner's or scheduler's class and arguments, as the sweep runs them."""
        one = len(metrics) == 1
        write_text(self.settings, yaml.safe_dump({"sweeper": sweeper, "metric": metrics[0] if one else metrics,
                                                  "direction": directions[0] if one else directions,
                                                  "params": params, "early_stopping": early_stopping},
                                                 sort_keys=False))

    def record_trial(self, number: int, status: Status, params: dict, *, run_dir=None, steps: Optional[int] = None,
                     value=None, best=None, reason: Optional[str] = None, **extra) -> dict:
        """Append trial `number`'s row: its status, parameters, `steps` (the last step it reported), `value` (what
        the sweeper was told, for a completed trial), `best` (its best reported value), why it failed (a line),
        anything `extra`, and its dir."""
        row = {"trial": number, "params": params, "status": Status(status).value, "steps": steps, "value": value,
               "best": best, **({"reason": reason.splitlines()[0]} if reason else {}), **extra,
               "run_dir": str(run_dir or self.path / str(number))}
        append_jsonl(self.trials, row)
        return row

    def trial_rows(self) -> dict[int, dict]:
        """The newest row of each trial, by trial number."""
        return {row["trial"]: row for row in read_jsonl(self.trials)}

    def write_results(self, sweeper: str, best: Optional[dict], overrides: list[str], counts: dict,
                      extra: Optional[dict] = None) -> None:
        """optimization_results.yaml: the best trial (its row), the overrides that run it alone, the trials
        by status, and the sweeper's `extra` (a multi-objective sweep's Pareto front). No best (nothing
        completed): the counts only."""
        results = {"name": sweeper}
        if best is not None:
            results.update(best_params=best["params"], best_value=best["value"], best_trial=best["trial"],
                           best_run_dir=best["run_dir"], best_overrides=overrides)
        results.update(extra or {})
        results["trials"] = {Status(k).value: v for k, v in counts.items()}
        write_text(self.results, yaml.safe_dump(results, sort_keys=False, allow_unicode=True))

    def best_run_dir(self) -> Path:
        if not self.results.is_file():
            raise UserError(f"{self.results} not found: is {self.path} a finished sweep?")
        run_dir = (yaml.safe_load(self.results.read_text(encoding="utf-8")) or {}).get("best_run_dir")
        if not run_dir:
            raise UserError(f"{self.results} names no best_run_dir")
        return Path(run_dir)
