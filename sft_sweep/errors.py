"""The one error type users see as a single line (bad config, bad data, missing model)."""


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
