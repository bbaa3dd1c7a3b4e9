"""How a run or a sweep trial ended: the one vocabulary of the run manifest, the sweepers' trial records,
the reports and resume. Each word is spelled here only; everything else uses `Status`.

    started      the run is going -- or was killed without a word (its manifest was never updated)
    completed    trained to the end; its records (metrics.json last) are written
    pruned       an Optuna pruner stopped it early (its curve and records are kept)
    stopped      a sweep's scheduler (ASHA) stopped it early
    diverged     the training monitor stopped it (a sweep counts it failed)
    failed       an error ended it
    interrupted  a signal (Ctrl-C, SIGTERM, a cluster's preemption) stopped it after a checkpoint:
                 the same command resumes it
"""

from enum import StrEnum


class Status(StrEnum):
    STARTED = "started"
    COMPLETED = "completed"
    PRUNED = "pruned"
    STOPPED = "stopped"
    DIVERGED = "diverged"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    @property
    def label(self) -> str:
        """The word a person reads (console, report)."""
        return _LABELS.get(self, self.value)

    @property
    def color(self) -> str:
        """The report's colour for it."""
        return _COLORS[self]

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
        """Its checkpoints may be resumed by the same command: it never reached its end."""
        return self in (Status.STARTED, Status.INTERRUPTED, Status.FAILED)


_LABELS = {Status.STOPPED: "stopped early"}
_COLORS = {Status.STARTED: "#1f77b4", Status.COMPLETED: "#2a7d2a", Status.PRUNED: "#a65e00",
           Status.STOPPED: "#a65e00", Status.DIVERGED: "#c00", Status.FAILED: "#c00", Status.INTERRUPTED: "#7f7f7f"}
