"""Never lose a run: stop cleanly on SIGTERM/SIGINT, and resume from the newest complete checkpoint.

- The first SIGTERM or SIGINT (a cluster's preemption notice, Ctrl-C) lets the current step finish, saves
  a checkpoint, records the run as `interrupted` and exits with code 75 (EX_TEMPFAIL: try again). A
  second signal exits at once; a checkpoint it cuts short is detected on resume and skipped.
- `trainer.resume_from_checkpoint: auto` (the default): a run starts from the newest *complete*
  checkpoint of its own run dir or, for a single run in a fresh dir, of the newest unfinished run of the
  same command beside it (the same command run again; a sweep trial resumes from its own dir only). A path
  resumes from that checkpoint; null starts from scratch.

What makes a checkpoint complete: run_dir.is_complete_checkpoint.
"""

import contextlib
import errno
import logging
import os
import shutil
import socket
from pathlib import Path

from hydra_pruning_sweepers.records import StopOnSignal
from transformers import TrainerCallback

from sft_sweep.errors import RunInterrupted, UserError
from sft_sweep.run_dir import RunDir, checkpoint_stamp, checkpoints_newest_first, is_complete_checkpoint, read_json
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


def resume_point(run_dir: RunDir, setting, command: str | None, data_fingerprint: str | None = None) -> Path | None:
    """The checkpoint this run starts from, or None (from scratch). With `auto`: the newest complete checkpoint
    of its own dir; else, of the newest earlier run of the same command -- only when that run is unfinished,
    dead and trained on the same data (a completed run of the command means its work is done: start afresh)."""
    if setting in (None, False, "none", "null"):
        return None
    if setting != "auto":
        checkpoint = Path(setting)
        if not is_complete_checkpoint(checkpoint):
            raise UserError(f"trainer.resume_from_checkpoint={setting}: not a complete checkpoint "
                            f"(no readable trainer_state.json and weights)")
        return checkpoint
    if checkpoint := newest_complete(run_dir.checkpoints):
        return checkpoint if same_data(checkpoint, data_fingerprint) else None
    if command is None:
        return None
    earlier = [(read_json(p.manifest), p) for p in map(RunDir, run_dir.path.parent.iterdir())
               if p.path != run_dir.path and p.manifest.is_file()]
    earlier = sorted(((m, p) for m, p in earlier if m.get("command") == command),
                     key=lambda mp: mp[0].get("started_at") or mp[1].manifest.stat().st_mtime)
    if not earlier:
        return None
    manifest, newest = earlier[-1]
    if newest.finished or not Status(manifest.get("status")).resumable or alive_elsewhere(manifest):
        return None
    # its own newest checkpoint, else the one it resumed from itself (it died before saving one)
    checkpoint = newest_complete(newest.checkpoints) or (
        Path(manifest["resumed_from"]) if manifest.get("resumed_from") and is_complete_checkpoint(
            Path(manifest["resumed_from"])) else None)
    if checkpoint is None or not same_data(checkpoint, data_fingerprint):
        return None
    run_dir.update(resumed_from=str(checkpoint))
    return checkpoint


def same_data(checkpoint: Path, data_fingerprint: str | None) -> bool:
    """The checkpoint was trained on this data (checkpoints without a stamp are taken as they are)."""
    stamp = checkpoint_stamp(checkpoint)
    saved = read_json(stamp).get("data_fingerprint") if stamp.is_file() else None
    if data_fingerprint is None or saved is None or saved == data_fingerprint:
        return True
    log.warning("resume: not resuming from %s: it was trained on other data (fingerprint %s, now %s); starting "
                "from scratch", checkpoint, saved, data_fingerprint)
    return False


@contextlib.contextmanager
def disk_full_is_an_error(checkpoints: str):
    """No space left anywhere in a run (a checkpoint, most likely; the weights, the records): remove the
    half-written checkpoints, which only take room, and say in one line where the run can go on from."""
    folder = Path(checkpoints)
    try:
        yield
    except Exception as exc:
        if not disk_full(exc, folder):
            raise
        good = newest_complete(folder)
        half = [p for p in folder.glob("checkpoint-*") if not is_complete_checkpoint(p)]
        for path in half:
            shutil.rmtree(path, ignore_errors=True)
        where = Path(exc.filename).parent if getattr(exc, "filename", None) else half[0] if half else folder
        raise UserError(f"no space left on device writing {where}; removed {len(half)} half-written checkpoint(s); "
                        + (f"free space and run the same command again to resume from {good}" if good else
                           "free space and run the same command again")) from None


def disk_full(exc: BaseException, folder: Path) -> bool:
    """The error is the disk's: ENOSPC (or a quota), said as such, or -- torch's checkpoint writer says only
    "unexpected pos" / "PytorchStreamWriter failed" -- a write error on a filesystem with (almost) no room left."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    if "No space left on device" in text or "Disk quota exceeded" in text:
        return True
    if isinstance(exc, RuntimeError) and any(s in text for s in ("unexpected pos", "PytorchStreamWriter failed",
                                                                 "file write failed")):
        probe = next((p for p in (folder, *folder.parents) if p.exists()), None)
        return probe is not None and shutil.disk_usage(probe).free < 64 * 2**20
    return False


class GracefulStop(StopOnSignal, TrainerCallback):
    """A run's SIGTERM / SIGINT, from its start to its end (`with GracefulStop() as stop:` in the recipe).

    During training the first signal lets the current step finish, saves a checkpoint and stops training;
    `raise_if_stopped` then ends the run (RunInterrupted: status interrupted, exit 75). Outside training --
    setup, the evaluation before training, the end-of-run evaluation -- there is no step to finish, so the
    run stops at once, with the same status and exit code (the sweepers' records.StopOnSignal). A second
    signal stops at once in any phase. The last training step always saves a checkpoint (unless
    trainer.save_strategy=no): a run interrupted in its end-of-run evaluation resumes there, without training
    again."""

    error = RunInterrupted

    def noted(self, name: str) -> None:
        log.warning("%s received: saving a checkpoint after this step, then exiting (send it again to exit at once)",
                    name)

    def on_train_begin(self, args, state, control, **kwargs):
        self.deferred, self.phase = True, "training"

    def on_step_end(self, args, state, control, **kwargs):
        if self.received is not None:
            control.should_save = True
            control.should_training_stop = True
        elif state.global_step >= state.max_steps and args.save_strategy != "no":
            control.should_save = True  # the final state: an interrupted end-of-run evaluation resumes from it

    def on_train_end(self, args, state, control, **kwargs):
        self.deferred = False

    def raise_if_stopped(self, state, checkpoints: Path) -> None:
        if self.received is not None:
            raise RunInterrupted(f"stopped by {self.received} at step {state.global_step}; checkpoint saved in "
                                 f"{checkpoints}; run the same command again to resume")
