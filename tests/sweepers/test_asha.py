"""The Ray Tune ASHA sweeper on a real two-node Ray cluster started on this machine (`ray start --head` plus a
second `ray start --address=...`): trials land on both nodes, weak ones stop early, two run at once, and a
sweep whose driver is killed resumes when the same command runs again."""

import json
import os
import secrets
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.helpers import embedded

pytestmark = pytest.mark.slow
PORT = "6391"


@pytest.fixture
def ray_cluster(tmp_path):
    """Two Ray nodes of one CPU each, joined over loopback; Ray 2.60 heads expect token authentication
    (RAY_AUTH_MODE=token), with a token every node and the driver share."""
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "HF_HUB_OFFLINE": "1"}
    subprocess.run(["ray", "stop", "--force"], env=env, capture_output=True)
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    subprocess.run(["ray", "start", "--head", f"--port={PORT}", "--include-dashboard=false", *common], env=env,
                   check=True, capture_output=True)
    try:
        subprocess.run(["ray", "start", f"--address=127.0.0.1:{PORT}", *common], env=env, check=True,
                       capture_output=True)
        yield env
    finally:
        subprocess.run(["ray", "stop", "--force"], env=env, capture_output=True)


def test_asha_on_a_two_node_cluster_stops_weak_trials_and_resumes_after_the_driver_is_killed(ray_cluster, tmp_path):
    sweep = tmp_path / "asha"
    command = [sys.executable, "-m", "sft_sweep", "-m", "hparams_search=asha", "hydra.sweeper.num_samples=6",
               "trainer.max_steps=8", "trainer.eval_steps=2", "hydra.sweeper.scheduler.grace_period=2",
               "hydra.sweeper.scheduler.reduction_factor=2", "hydra.sweeper.ray_init.address=auto",
               "trainer.packing=false", "trainer.per_device_train_batch_size=8", "data.val_ratio=0",
               "data.min_val_size=16", "hydra.sweeper.enqueue=[{optim.learning_rate:0.0005,lora.r:16}]",
               f"hydra.sweep.dir={sweep}"]
    # The first driver is killed once trials have reported and Tune has saved its experiment state.
    driver = subprocess.Popen(command, cwd=tmp_path, env=ray_cluster, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while len(list(sweep.glob("*/tune_progress.jsonl"))) < 2 or not list(sweep.glob("ray/*/experiment_state*")):
            assert time.time() < deadline and driver.poll() is None
            time.sleep(0.5)
        time.sleep(3)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    assert not (sweep / "optimization_results.yaml").exists()  # it did not get to the end
    subprocess.run(command, cwd=tmp_path, env=ray_cluster, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=600)

    rows = [json.loads(line) for line in (sweep / "trials.jsonl").read_text().splitlines()]
    assert [r["trial"] for r in rows] == [0, 1, 2, 3, 4, 5]
    assert rows[0]["params"]["optim.learning_rate"] == 0.0005 and rows[0]["params"]["lora.r"] == 16  # enqueued
    assert yaml.safe_load((sweep / "sweep.yaml").read_text())["early_stopping"] == {
        "_target_": "ray.tune.schedulers.ASHAScheduler", "grace_period": 2, "reduction_factor": 2, "max_t": 8}
    statuses = [r["status"] for r in rows]
    assert "stopped early" in statuses and "completed" in statuses
    assert len({r["node"] for r in rows}) == 2  # trials ran on both nodes of the cluster
    spans, ended_in_report = [], 0
    for r in rows:
        progress = [json.loads(line) for line in (sweep / str(r["trial"]) / "tune_progress.jsonl").read_text()
                    .splitlines()]
        assert progress[0]["step"] == 0 and progress[-1]["step"] == r["steps"]  # written before each report
        assert r["best_eval_loss"] == pytest.approx(min(p["eval_loss"] for p in progress))
        assert (sweep / str(r["trial"]) / "metrics.json").is_file() == (r["status"] == "completed")
        if r["status"] == "stopped early":
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
        times = [p["time"] for p in progress]
        spans.append((min(times), max(times)))
    assert ended_in_report > 0  # ASHA ends a stopped trial inside its report, which records it stopped
    # one CPU on each node, one CPU per trial: two trials ran at the same time
    assert any(a0 < b1 and b0 < a1 for i, (a0, a1) in enumerate(spans) for (b0, b1) in spans[i + 1:])
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    scored = [r for r in rows if r["status"] in ("completed", "stopped early")]
    best = min(scored, key=lambda r: r["best_eval_loss"])
    assert results["best_trial"] == best["trial"] and results["best_run_dir"] == str(sweep / str(best["trial"]))
    assert f"lora.r={best['params']['lora.r']}" in results["best_overrides"]
    assert "hparams_search=asha" not in results["best_overrides"]
    assert (sweep / "trials.md").read_text().count("\n") == 2 + 6
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
