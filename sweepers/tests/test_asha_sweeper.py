"""The asha sweeper on the toy app (toy/app.py, toy/conf/asha.yaml) in a local Ray: weak trials stop at the first
rung, the trials that end by themselves say how (completed, failed, diverged), the records and the best."""

import json
import os
import subprocess
import sys
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
