"""SIGTERM / SIGINT / SIGUSR2 (a scheduler's cancel or preemption notice -- SLURM's scancel, submitit's USR2 before
a time limit or a preemption --, a `kill`, Ctrl-C) turned into RunInterrupted: one line,
status interrupted, exit 75 (EX_TEMPFAIL: the same command resumes). Light on purpose: a sweeper uses it between
trials without importing the training stack; a run's GracefulStop (preemption.py) adds what training needs.
"""

import signal

from sft_sweep.errors import RunInterrupted

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)


class StopOnSignal:
    """`with StopOnSignal() as stop:` -- a signal raises RunInterrupted where the program is, naming `stop.phase`.
    A subclass that can stop more gently (at the end of a training step) sets `deferred` while it can. A second
    signal always stops at once. Outside the main thread (where Python delivers no signal) nothing changes."""

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
            raise RunInterrupted(f"stopped at once by a second {name} during {self.phase}; run the same command "
                                 f"again to resume from its newest checkpoint")
        self.received = name
        if not self.deferred:
            raise RunInterrupted(f"stopped by {name} during {self.phase}; run the same command again to resume")
        self.noted(name)

    def noted(self, name: str) -> None:
        """A deferred first signal (see `deferred`)."""
