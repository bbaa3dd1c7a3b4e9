"""Never lose a run: stop cleanly on SIGTERM/SIGINT, and resume from the newest complete checkpoint.

- The first SIGTERM or SIGINT (a cluster's preemption notice, Ctrl-C) lets the current step finish, saves
  a checkpoint, records the run as `interrupted` and exits with code 75 (EX_TEMPFAIL: try again). A
  second signal exits at once; a checkpoint it cuts short is detected on resume and skipped.
- `trainer.resume_from_checkpoint: auto` (the default): a run starts from the newest *complete*
  checkpoint of its own run dir or, in a fresh dir, of the newest unfinished run of the same command
  beside it (the same command run again, or a sweep trial re-run with the same parameters). A path
  resumes from that checkpoint; null starts from scratch.

What makes a checkpoint complete: run_dir.is_complete_checkpoint.
"""

import contextlib
import errno
import logging
import os
import shutil
import signal
import socket
from pathlib import Path

from transformers import TrainerCallback

from sft_sweep.errors import RunInterrupted, UserError
from sft_sweep.run_dir import RunDir, checkpoints_newest_first, is_complete_checkpoint, read_json
from sft_sweep.status import Status

log = logging.getLogger("sft_sweep")


def newest_complete(checkpoints: Path) -> Path | None:
    for checkpoint in checkpoints_newest_first(checkpoints):
        if is_complete_checkpoint(checkpoint):
            return checkpoint
        log.warning("resume: skipping %s: half-written (no complete trainer_state.json)", checkpoint)
    return None


def alive_elsewhere(manifest: dict) -> bool:
    """The run is still going in another process on this host."""
    if manifest.get("host") != socket.gethostname() or not manifest.get("pid") or manifest["pid"] == os.getpid():
        return False
    try:
        os.kill(manifest["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def resume_point(run_dir: RunDir, setting, command: str | None) -> Path | None:
    """The checkpoint this run starts from, or None (from scratch)."""
    if setting in (None, False, "none", "null"):
        return None
    if setting != "auto":
        checkpoint = Path(setting)
        if not is_complete_checkpoint(checkpoint):
            raise UserError(f"trainer.resume_from_checkpoint={setting}: not a complete checkpoint "
                            f"(no readable trainer_state.json and weights)")
        return checkpoint
    if checkpoint := newest_complete(run_dir.checkpoints):
        return checkpoint
    if command is None:
        return None
    siblings = sorted((p for p in run_dir.path.parent.iterdir() if p != run_dir.path and p.is_dir()),
                      key=lambda p: p.stat().st_mtime, reverse=True)
    for sibling in map(RunDir, siblings):
        if not sibling.manifest.is_file() or sibling.finished:
            continue
        manifest = read_json(sibling.manifest)
        if (manifest.get("command") == command and Status(manifest.get("status")).resumable
                and not alive_elsewhere(manifest)):
            if checkpoint := newest_complete(sibling.checkpoints):
                return checkpoint
    return None


@contextlib.contextmanager
def disk_full_is_an_error(checkpoints: str):
    """No space left while training (a checkpoint, most likely): remove the half-written checkpoints, which
    only take room, and say in one line where the run can go on from."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        folder = Path(checkpoints)
        good = newest_complete(folder)
        half = [p for p in folder.glob("checkpoint-*") if not is_complete_checkpoint(p)]
        for path in half:
            shutil.rmtree(path, ignore_errors=True)
        where = Path(exc.filename).parent if exc.filename else folder
        raise UserError(f"no space left on device writing {where}; removed {len(half)} half-written checkpoint(s); "
                        + (f"free space and run the same command again to resume from {good}" if good else
                           "free space and run the same command again")) from None


class GracefulStop(TrainerCallback):
    """SIGTERM/SIGINT during training: finish the step, save a checkpoint, stop (see module doc)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received = None
        self.previous = {}

    def handle(self, signum, frame):
        if self.received is not None:  # the second signal: at once
            self.restore()
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}")
        self.received = signal.Signals(signum).name
        log.warning("%s received: saving a checkpoint after this step, then exiting (send it again to exit at once)",
                    self.received)

    def restore(self):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def on_train_begin(self, args, state, control, **kwargs):
        try:
            self.previous = {s: signal.signal(s, self.handle) for s in self.SIGNALS}
        except ValueError:  # not the main thread (a sweep worker thread): the process's own handlers stay
            self.previous = {}

    def on_step_end(self, args, state, control, **kwargs):
        if self.received is not None:
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        self.restore()

    def raise_if_stopped(self, state, checkpoints: Path) -> None:
        if self.received is not None:
            raise RunInterrupted(f"stopped by {self.received} at step {state.global_step}; checkpoint saved in "
                                 f"{checkpoints}; run the same command again to resume")
