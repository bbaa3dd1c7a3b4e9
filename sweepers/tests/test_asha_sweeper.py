"""The asha sweeper on the toy app (toy/app.py, toy/conf/asha.yaml) in a local Ray: weak trials stop at the first
rung, the trials that end by themselves say how (completed, failed, diverged), the records and the best; SIGTERM to
the driver stops the sweep in one line and the same command resumes it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray.tune", reason="the ray extra is not installed")
pytestmark = pytest.mark.slow
APP = Path(__file__).parent / "toy" / "app.py"


def test_weak_trials_stop_at_the_first_rung_and_every_end_is_recorded(tmp_path):
    # Ray runs the enqueued points in order, two at a time: two sound trials first, so that the rung at step 2 has
    # their reports (equal: both 0.25 above the bottom) when the weak ones arrive; then one that fails, one that
    # diverges.
    enqueue = ("[{x: 0.5, y: -2, fail: false, diverge: false}, {x: 1.5, y: -2, fail: false, diverge: false}, "
               "{x: 4.0, y: 4, fail: false, diverge: false}, {x: -4.0, y: 4, fail: false, diverge: false}, "
               "{x: 0.0, y: 0, fail: true, diverge: false}, {x: 0.0, y: 0, fail: false, diverge: true}]")
    proc = subprocess.run(
        [sys.executable, str(APP), "--config-name", "asha", "--multirun", f"hydra.sweep.dir={tmp_path / 'sweep'}",
         "hydra.sweeper.max_concurrent_trials=2", "fail=choice(false,true)", "diverge=choice(false,true)",
         f"hydra.sweeper.enqueue={enqueue}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "RAY_ADDRESS": "local"})  # a Ray of its own, not one another test started here
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "sweep"
    rows = {r["trial"]: r for r in map(json.loads, (sweep / "trials.jsonl").read_text().splitlines())}
    assert sorted(rows) == list(range(6))
    assert [rows[n]["status"] for n in range(6)] == ["completed", "completed", "stopped", "stopped", "failed",
                                                       "diverged"]
    assert [rows[n]["steps"] for n in range(4)] == [8, 8, 2, 2]  # the weak ones at the first rung
    assert rows[4]["reason"] == "RuntimeError: the toy app failed on purpose"
    assert rows[5]["reason"] == "TrialDiverged: the toy app's curve blew up"
    for n in range(4):  # each report was written to the trial's dir before it was sent
        progress = [json.loads(line) for line in (sweep / str(n) / "tune_progress.jsonl").read_text().splitlines()]
        assert [p["step"] for p in progress] == list(range(1, rows[n]["steps"] + 1))
        assert rows[n]["best"] == pytest.approx(min(p["bowl"] for p in progress))
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_trial"] == 0 and results["best_params"]["x"] == 0.5 and "x=0.5" in results["best_overrides"]
    assert results["trials"] == {"completed": 2, "stopped": 2, "failed": 1, "diverged": 1}
    assert (sweep / "trials.md").read_text().count("\n") == 2 + 6


def test_sigterm_to_the_driver_is_one_line_and_the_same_command_resumes_the_sweep(tmp_path):
    """Ray Tune stops gently on Ctrl-C by itself (it saves the experiment); SIGTERM (a scheduler's, a `kill`) must
    do the same: one line, exit code 75, no results yet -- and the same command resumes the sweep to its end."""
    sweep = tmp_path / "sweep"
    command = [sys.executable, str(APP), "--config-name", "asha", "--multirun", f"hydra.sweep.dir={sweep}",
               "hydra.sweeper.num_samples=1", "+step_s=0.25"]
    env = {**os.environ, "RAY_ADDRESS": "local"}
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (sweep / "0" / "tune_progress.jsonl").exists():  # its first report: the trial runs
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 75, err[-3000:]
    assert "Traceback" not in out + err
    assert err.strip().splitlines()[-1] == ("error: the ASHA sweep stopped by SIGTERM with 0 of 1 trials ended; run "
                                            "the same command again to resume it")
    assert not (sweep / "optimization_results.yaml").exists()
    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming the ASHA sweep" in again.stdout + again.stderr
    [row] = [json.loads(line) for line in (sweep / "trials.jsonl").read_text().splitlines()]
    assert row["status"] == "completed" and row["steps"] == 8  # max_t
    assert yaml.safe_load((sweep / "optimization_results.yaml").read_text())["trials"] == {"completed": 1}
