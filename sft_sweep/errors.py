"""The one error type users see as a single line (bad config, bad data, missing model)."""

import functools
import sys
from typing import NoReturn


class UserError(Exception):
    """Bad input from the user: printed as one line, no traceback, in a single run."""


class RunDiverged(UserError):
    """The training monitor stopped a run as diverged; its records are written, and a sweep counts it failed."""

    exit_code = 3


class TrialPruned(UserError):
    """An Optuna sweep's pruner stopped this trial early; its records are written (status pruned)."""


class RunInterrupted(UserError):
    """Training stopped on SIGTERM/SIGINT after saving a checkpoint (status interrupted); the same command
    resumes it. Exit code 75 (EX_TEMPFAIL): schedulers that requeue on it get the run back."""

    exit_code = 75


def exit_in_one_line(exc: UserError) -> NoReturn:
    """`error: ...` on stderr, no traceback, and the error's exit code (2 unless it says otherwise)."""
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(getattr(exc, "exit_code", 2)) from None


def one_line_errors(main):
    """A small CLI's `main(argv) -> int`: a UserError out of it is one `error: ...` line on stderr and exit code 2,
    no traceback."""

    @functools.wraps(main)
    def wrapped(argv: list[str]) -> int:
        try:
            return main(argv)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return wrapped


def exits_in_one_line(function):
    """A UserError out of `function` (a sweeper's sweep, say, which Hydra would print with its traceback)
    ends the process by exit_in_one_line."""

    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except UserError as exc:
            exit_in_one_line(exc)

    return wrapped
