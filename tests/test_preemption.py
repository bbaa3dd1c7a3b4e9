"""Preemption and resume on real runs: SIGTERM saves a checkpoint and exits 75, SIGKILL loses only the steps since
the last checkpoint, a half-written checkpoint is skipped, and the resumed loss curve equals an uninterrupted run's
bitwise (CPU, logging every step)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from sft_sweep.errors import UserError
from sft_sweep.preemption import newest_complete, resume_point
from sft_sweep.run_dir import RunDir, checkpoint_runtime
from tests.helpers import TINY, env_without_network, losses, run_cli, wait_for

pytestmark = pytest.mark.slow
RUN = [*TINY, "trainer.logging_steps=1", "trainer.save_steps=4", "trainer.save_total_limit=null", "eval.enabled=false"]
# The same entrypoint, each training step slowed by 0.25 s so a signal can land mid-run.
SLOW = ("import runpy, sys, time, transformers\n"
        "step = transformers.Trainer.training_step\n"
        "def slow(self, *a, **k):\n    time.sleep(0.25)\n    return step(self, *a, **k)\n"
        "transformers.Trainer.training_step = slow\n"
        "sys.argv = ['sft_sweep', *sys.argv[1:]]\n"
        "runpy.run_module('sft_sweep', run_name='__main__')\n")

def start(cwd, *args):
    return subprocess.Popen([sys.executable, "-c", SLOW, *RUN, *args], cwd=cwd, env=env_without_network(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    assert run_cli(f"hydra.run.dir={run_dir}", *RUN) == 0
    return losses(run_dir)


def test_sigterm_saves_a_checkpoint_exits_75_and_the_run_resumes_bitwise(reference, tmp_path):
    run_dir = tmp_path / "run"
    process = start(tmp_path, f"hydra.run.dir={run_dir}")
    wait_for(run_dir / "checkpoints" / "checkpoint-4" / "trainer_state.json", process)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 75, out
    manifest = json.loads((run_dir / "run_manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["error"].startswith("RunInterrupted: stopped by SIGTERM")
    stopped = newest_complete(run_dir / "checkpoints")
    assert 4 < int(stopped.name.split("-")[1]) < 12  # saved at the step it stopped, not at a save_steps multiple
    assert not (run_dir / "metrics.json").exists()
    # the same command, pointing at the same run dir, resumes there
    assert run_cli(f"hydra.run.dir={run_dir}", *RUN) == 0
    assert f"resuming from {stopped} (step {stopped.name.split('-')[1]})" in (run_dir / "train.log").read_text()
    assert losses(run_dir) == reference  # bitwise
    assert json.loads((run_dir / "run_manifest.json").read_text())["status"] == "completed"
    # the figures cover the whole run, both processes: the loss mean over every step (an undisturbed run's, but for
    # the logged losses' rounding), the runtime at least the first process's slowed steps, the tokens all of them
    step, metrics = int(stopped.name.split("-")[1]), json.loads((run_dir / "metrics.json").read_text())
    mean = sum(loss for _, loss in reference) / len(reference)
    assert abs(metrics["train_loss_mean"] - mean) < 1e-3 and metrics["global_step"] == 12
    assert metrics["train_runtime_s"] > checkpoint_runtime(stopped) >= 0.25 * step
    assert metrics["train_tokens_per_s"] == metrics["train_tokens"] / metrics["train_runtime_s"]


def test_after_sigkill_the_same_command_resumes_from_the_newest_complete_checkpoint(reference, tmp_path,
                                                                                    monkeypatch):
    process = start(tmp_path)  # in outputs/runs/<time>/, as a user would run it
    runs, killed, deadline = tmp_path / "outputs" / "runs", None, time.time() + 240
    while killed is None:
        found = list(runs.glob("*/checkpoints/checkpoint-8/trainer_state.json"))
        killed = found[0].parents[2] if found else None
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.1)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    # a checkpoint cut short by the kill: no trainer_state.json, which transformers writes last
    half = killed / "checkpoints" / "checkpoint-10"
    half.mkdir(exist_ok=True)
    (half / "adapter_model.safetensors").write_bytes(b"partial")
    (half / "trainer_state.json").unlink(missing_ok=True)
    assert json.loads((killed / "run_manifest.json").read_text())["status"] == "started"
    time.sleep(1.1)  # the next run dir gets another name (seconds resolution)
    monkeypatch.chdir(tmp_path)
    assert run_cli(*RUN) == 0  # the same command, in a fresh run dir
    [fresh] = [p for p in runs.iterdir() if p != killed]
    log = (fresh / "train.log").read_text()
    assert f"resume: skipping {half}: half-written" in log
    assert f"resuming from {killed / 'checkpoints' / 'checkpoint-8'} (step 8)" in log
    assert losses(fresh) == reference


def test_a_sweep_trial_never_resumes_another_trials_checkpoint(tmp_path):
    """Two trials of one sweep with the same parameters (a grid point run again, TPE sampling a point twice) are
    two trials: the second trains from scratch even while the first lies interrupted beside it with checkpoints
    (a sweeper launches an interrupted trial again in its own dir). A single run of the same command would resume
    from them (above)."""
    sweep = tmp_path / "sweep"
    args = ["-m", f"hydra.sweep.dir={sweep}", *RUN, "trainer.max_steps=8"]
    assert run_cli(*args, "hydra.sweep.subdir=0") == 0
    first = sweep / "0"
    (first / "metrics.json").unlink()  # as if interrupted after its last checkpoint
    record = json.loads((first / "run_manifest.json").read_text())
    (first / "run_manifest.json").write_text(json.dumps({**record, "status": "interrupted"}))
    assert run_cli(*args, "hydra.sweep.subdir=1") == 0
    second = sweep / "1"
    assert json.loads((second / "run_manifest.json").read_text())["command"] == record["command"]
    assert "resuming from" not in (second / "train.log").read_text()
    assert [step for step, _ in losses(second)] == list(range(1, 9)) and losses(second) == losses(first)


def checkpoint(run_dir, step, complete=True):
    path = run_dir / "checkpoints" / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(b"weights")
    if complete:
        (path / "trainer_state.json").write_text("{}")
    return path


def manifest(run_dir, command, status, pid=None):
    """A run dir's manifest as run_dir.start writes it (started_at: the order of runs of one command)."""
    import socket

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run_manifest.json").write_text(json.dumps({"command": command, "status": status, "pid": pid,
                                                           "host": socket.gethostname(), "started_at": time.time()}))


def test_resume_point_takes_only_unfinished_dead_runs_of_the_same_command(tmp_path):
    runs = tmp_path / "runs"
    run = RunDir(runs / "new")
    run.path.mkdir(parents=True)
    other, done, alive, dead = (runs / n for n in ("other", "done", "alive", "dead"))
    manifest(other, "python -m sft_sweep lora.r=8", "interrupted")
    checkpoint(other, 4)
    manifest(done, "cmd", "completed")
    checkpoint(done, 4)
    (done / "metrics.json").write_text("{}")
    manifest(alive, "cmd", "started", pid=os.getppid())  # still running
    checkpoint(alive, 4)
    assert resume_point(run, "auto", "cmd") is None
    manifest(dead, "cmd", "started", pid=2**22 + 12345)  # its process is gone
    good = checkpoint(dead, 4)
    checkpoint(dead, 8, complete=False)
    assert resume_point(run, "auto", "cmd") == good
    assert resume_point(run, None, "cmd") is None
    own = checkpoint(run.path, 2)
    assert resume_point(run, "auto", "cmd") == own  # its own checkpoints first
    with pytest.raises(UserError, match="not a complete checkpoint"):
        resume_point(run, str(dead / "checkpoints" / "checkpoint-8"), "cmd")


def test_a_completed_run_of_the_command_ends_its_resume_chain_and_other_data_is_not_resumed(tmp_path):
    """kill -9 a run, re-run the command to completion, run it a third time: the third starts from scratch (the
    killed run's checkpoint was used up). A killed run trained on other data is never resumed."""
    import time

    runs = tmp_path / "runs"
    killed, completed, third = runs / "1_killed", runs / "2_completed", RunDir(runs / "3_third")
    manifest(killed, "cmd", "started", pid=2**22 + 12345)
    stale = checkpoint(killed, 40)
    time.sleep(0.01)
    manifest(completed, "cmd", "completed")
    (completed / "metrics.json").write_text("{}")
    manifest(third.path, "cmd", "started", pid=os.getpid())  # this run (its manifest is written first)
    assert resume_point(third, "auto", "cmd", "data-a") is None  # the command's newest run completed
    (completed / "metrics.json").unlink()  # ...had it been killed too (before saving anything), it resumed from
    manifest(completed, "cmd", "started", pid=2**22 + 12346)  # the first run's checkpoint, which it records
    (completed / "run_manifest.json").write_text(json.dumps({**json.loads((completed / "run_manifest.json")
                                                                          .read_text()), "resumed_from": str(stale)}))
    assert resume_point(third, "auto", "cmd", "data-a") == stale
    assert json.loads(third.manifest.read_text())["resumed_from"] == str(stale)  # where it goes on from
    (stale / "sft_sweep.json").write_text(json.dumps({"data_fingerprint": "data-b", "command": "cmd"}))
    assert resume_point(third, "auto", "cmd", "data-a") is None  # trained on other data
    assert resume_point(third, "auto", "cmd", "data-b") == stale
