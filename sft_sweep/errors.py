"""The errors users see as a single line (bad config, bad data, missing model) and the ways a run ends early.
They are the sweepers' own (hydra_pruning_sweepers.records): a sweep reads how a trial ended from its
exception's class, and prints a bad setting in one line, whichever app it sweeps."""

import functools
import sys

from hydra_pruning_sweepers.records import (
    TrialDiverged,
    TrialInterrupted,
    UserError,
    exit_in_one_line,
    exits_in_one_line,
)
from hydra_pruning_sweepers.records import TrialPruned as _TrialPruned

__all__ = ["UserError", "RunDiverged", "TrialPruned", "RunInterrupted", "exit_in_one_line", "exits_in_one_line",
           "one_line_errors"]


class RunDiverged(TrialDiverged):
    """The training monitor stopped a run as diverged; its records are written, and a sweep counts it failed
    (exit code 3)."""


class TrialPruned(_TrialPruned):
    """An Optuna sweep's pruner stopped this trial early; its records are written (status pruned)."""


class RunInterrupted(TrialInterrupted):
    """Training stopped on SIGTERM/SIGINT after saving a checkpoint (status interrupted); the same command
    resumes it. Exit code 75 (EX_TEMPFAIL): schedulers that requeue on it get the run back."""


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
