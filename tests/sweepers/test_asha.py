"""The Ray Tune ASHA sweeper on a real two-node Ray cluster started on this machine (`ray start --head` plus a
second `ray start --address=...`): trials land on both nodes, weak ones stop early, and a sweep whose driver is
killed resumes when the same command runs again."""

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time

import pytest
import yaml

from sft_sweep.benchmarks.sweeps import as_enqueue
from sft_sweep.run_dir import SweepDir
from tests.helpers import embedded

pytestmark = pytest.mark.slow
PORT = "6391"


@pytest.fixture
def ray_cluster(tmp_path):
    """Two Ray nodes of one CPU each, joined over loopback; Ray 2.60 heads expect token authentication
    (RAY_AUTH_MODE=token), with a token every node and the driver share. Each `ray start` leads a process group of
    its own, and the cluster ends by killing those two groups: `ray stop` would stop every Ray on the machine,
    those of tests running beside this one too."""
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "HF_HUB_OFFLINE": "1"}
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    groups = []

    def start(*args):
        proc = subprocess.Popen(["ray", "start", *args, *common], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        groups.append(proc.pid)  # the daemons it starts stay in its process group
        assert proc.wait(timeout=120) == 0, proc.stderr.read()

    try:
        start("--head", f"--port={PORT}", "--include-dashboard=false")
        start(f"--address=127.0.0.1:{PORT}")
        yield env
    finally:
        for group in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)


GOOD = [{"optim.learning_rate": 0.0005, "lora.r": 16}, {"optim.learning_rate": 0.001, "lora.r": 8}]
WEAK = [{"optim.learning_rate": 1e-7, "lora.r": r} for r in (8, 32)]  # the model stays as it was


def test_asha_on_a_two_node_cluster_stops_weak_trials_and_resumes_after_the_driver_is_killed(ray_cluster, tmp_path):
    """Two sound trials start first (one on each node), then two that barely train. The driver is killed once a
    trial has ended, so the weak ones meet the first rung only in the resumed sweep: each must stop there, which
    holds only if the resumed ASHA has the rung records of the trials before the kill. (The driver joins this
    cluster by its address: `auto` joins the Ray started last on the machine, which may be another test's.)"""
    sweep = tmp_path / "asha"
    command = [sys.executable, "-m", "sft_sweep", "-m", "hparams_search=asha", "hydra.sweeper.num_samples=4",
               "trainer.max_steps=8", "trainer.eval_steps=2", "hydra.sweeper.scheduler.grace_period=2",
               "hydra.sweeper.scheduler.reduction_factor=2", f"hydra.sweeper.ray_init.address=127.0.0.1:{PORT}",
               "trainer.packing=false", "trainer.per_device_train_batch_size=8", "optim.warmup_steps=0",
               "data.val_ratio=0", "data.min_val_size=16", "eval.enabled=false", as_enqueue(GOOD + WEAK),
               f"hydra.sweep.dir={sweep}"]
    env = {**ray_cluster, "TUNE_GLOBAL_CHECKPOINT_S": "1"}  # Tune saves its experiment state every second
    # The first driver is killed once a trial has ended and Tune has saved that in its experiment state.
    driver = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 400
        while not ended_and_saved(sweep):
            assert time.time() < deadline and driver.poll() is None
            time.sleep(0.2)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    assert not (sweep / "optimization_results.yaml").exists()  # it did not get to the end
    ended_before = [json.loads(line) for line in (sweep / "trials.jsonl").read_text().splitlines()]
    assert not any((sweep / str(weak) / "tune_progress.jsonl").exists() for weak in (2, 3))  # not yet reported
    resumed = subprocess.run(command, cwd=tmp_path, env=env, check=True, capture_output=True, text=True,
                             timeout=600)

    rows = sorted(SweepDir(sweep).trial_rows().values(), key=lambda r: r["trial"])  # each trial's newest row
    assert [r["trial"] for r in rows] == [0, 1, 2, 3]
    assert [r["params"] for r in rows] == GOOD + WEAK  # the enqueued parameter sets, in order
    assert yaml.safe_load((sweep / "sweep.yaml").read_text())["early_stopping"] == {
        "_target_": "ray.tune.schedulers.ASHAScheduler", "grace_period": 2, "reduction_factor": 2, "max_t": 8}
    statuses = [r["status"] for r in rows]
    assert "completed" in statuses[:2]  # the first sound trial at each rung passes it, then reaches max_t
    assert statuses[2:] == ["stopped"] * 2 and [r["steps"] for r in rows[2:]] == [2, 2]  # the first rung
    for r in ended_before:  # the resumed sweep put the reports of the trials that had ended back in the rungs
        reports = len((sweep / str(r["trial"]) / "tune_progress.jsonl").read_text().splitlines())
        assert f"ASHA's rungs: trial {r['trial']}'s {reports} reports from before the resume" in resumed.stdout
    assert len({r["node"] for r in rows}) == 2  # trials ran on both nodes of the cluster
    ended_in_report = 0
    for r in rows:
        progress = [json.loads(line) for line in (sweep / str(r["trial"]) / "tune_progress.jsonl").read_text()
                    .splitlines()]
        assert progress[0]["step"] == 0 and progress[-1]["step"] == r["steps"]  # written before each report
        assert r["best"] == pytest.approx(min(p["eval_loss"] for p in progress))
        assert (sweep / str(r["trial"]) / "metrics.json").is_file() == (r["status"] == "completed")
        if r["status"] == "stopped":
            assert r["steps"] < 8
            manifest = json.loads((sweep / str(r["trial"]) / "run_manifest.json").read_text())
            ended_in_report += manifest["status"] == "stopped"
            if manifest["status"] == "stopped":  # ended in its last report: an ordinary end, not an error
                assert "error" not in manifest
                log = (sweep / str(r["trial"]) / "train.log").read_text()
                assert "run stopped: the sweep's scheduler stopped it at its last report" in log
                assert "Traceback" not in log
        config = yaml.safe_load((sweep / str(r["trial"]) / ".hydra" / "config.yaml").read_text())
        assert config["lora"]["r"] == r["params"]["lora.r"]  # each trial ran its own sampled config
    assert ended_in_report > 0  # ASHA ends a stopped trial inside its report, which records it stopped
    # (That two trials ran at once, one per node, is not asserted from their report times: on a loaded machine a
    # node's worker can take longer to start than a sound trial takes to train, and the test would fail by load.)
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    scored = [r for r in rows if r["status"] in ("completed", "stopped")]
    best = min(scored, key=lambda r: r["best"])
    assert results["best_trial"] == best["trial"] and results["best_run_dir"] == str(sweep / str(best["trial"]))
    assert f"lora.r={best['params']['lora.r']}" in results["best_overrides"]
    assert "hparams_search=asha" not in results["best_overrides"]
    assert (sweep / "trials.md").read_text().count("\n") == 2 + 4
    # the sweep report: the same statuses, every trial's reported curve (stopped ones cut short), the same best
    report = embedded(sweep / "report.html")
    assert report["sweeper"] == "asha" and [t["status"] for t in report["trials"]] == statuses
    for r, t in zip(rows, report["trials"]):
        progress = [json.loads(line) for line in (sweep / str(r["trial"]) / "tune_progress.jsonl").read_text()
                    .splitlines()]
        # one attempt's curve (a trial the resume restarted reports its steps again), every point a report
        steps = [step for step, _ in t["curve"]]
        assert steps and steps == sorted(set(steps)) and set(steps) <= {p["step"] for p in progress}
    assert report["best_trial"] == results["best_trial"]


def ended_and_saved(sweep) -> bool:
    """A trial has ended (its row in trials.jsonl) and Tune's experiment state was saved after it."""
    trials = sweep / "trials.jsonl"
    if not trials.is_file() or not trials.read_text().endswith("\n"):
        return False
    return any(state.stat().st_mtime > trials.stat().st_mtime for state in sweep.glob("ray/*/experiment_state*"))
