"""Never lose a trial, on a real SLURM cluster (tests/slurm_cluster.py: slurmctld, slurmd, slurmdbd on MariaDB,
munge, in a private network namespace). An Optuna sweep with the submitit launcher, its trials interrupted the
ways a cluster interrupts them -- scancel, scontrol requeue, a preemption signal (USR2), kill -9 of a job, the
sweeper itself killed -- finishes every trial, each resumed from its own checkpoint to the value an undisturbed
trial reaches.

Every trial has the same parameters (a one-value space), so the undisturbed trial of a sweep is the reference the
disturbed ones must equal. Without accounting (no slurmdbd) the sweep says what it cannot see. Skips, saying why,
where the cluster cannot start (not root, SLURM not installed)."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO
from tests.slurm_cluster import SlurmCluster

pytestmark = pytest.mark.slow

# 200 steps of 0.025-0.05 s: 4-9 s to interrupt a trial after its first checkpoint (every 20 steps) and before its end
# (the tests interrupt within a second of seeing that checkpoint).
TRIAL = ["hparams_search=optuna", "hydra/launcher=submitit_slurm", "hydra.launcher.cpus_per_task=1",
         "hydra/sweeper/pruner=none", "hydra.sweeper.storage=journal", "hydra.sweeper.params=null",
         "optim.learning_rate=choice(0.0001)", "trainer.max_steps=200", "trainer.eval_steps=100",
         "trainer.save_steps=20", "trainer.logging_steps=20", "trainer.packing=false",
         "trainer.per_device_train_batch_size=8", "data.val_ratio=0", "data.min_val_size=16", "eval.enabled=false"]
@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = SlurmCluster.unavailable()
    if why:
        pytest.skip(why)
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster
        assert cluster.listening_outside() == []  # the daemons were reachable from the namespace only


def start_sweep(cluster, sweep, n_trials, log, *extra):
    argv = [sys.executable, "-m", "sft_sweep", "-m", *TRIAL, f"hydra.sweep.dir={sweep}",
            f"hydra.sweeper.n_trials={n_trials}", f"hydra.sweeper.n_jobs={n_trials}", *extra]
    env = {**cluster.env, "OMP_NUM_THREADS": "1"}
    return cluster.popen(argv, cwd=REPO, env=env, stdout=log.open("a"), stderr=subprocess.STDOUT,
                         start_new_session=True)


def first_to_checkpoint(sweep, count, sweeper, log) -> list[int]:
    """The first `count` trials to save a checkpoint (the ones SLURM started first), in trial order.

    A trial seen with a checkpoint stays seen: SLURM may start two jobs seconds apart, and by the time the second
    saves its first checkpoint the first trial's may be rotated away (save_total_limit) -- never both at once."""
    seen: list[int] = []
    while True:
        for state in sorted(sweep.glob("*/checkpoints/checkpoint-*/trainer_state.json")):
            if (trial := int(state.parents[2].name)) not in seen:
                seen.append(trial)
        if len(seen) >= count:
            return sorted(seen[:count])
        assert sweeper.poll() is None, log.read_text()[-3000:]
        time.sleep(0.2)


def job_of(sweep, trial) -> str:
    """The SLURM job that ran (or runs) a trial: submitit's job id, in the trial's saved Hydra config."""
    for line in (sweep / str(trial) / ".hydra" / "hydra.yaml").read_text().splitlines():
        if line.strip().startswith("id:"):
            return line.split(":", 1)[1].strip().strip("'\"")
    raise AssertionError(f"no job id in trial {trial}'s hydra.yaml")


def final_rows(sweep) -> dict[int, dict]:
    records = sweep / "trials.jsonl"
    rows = [json.loads(line) for line in records.read_text().splitlines()] if records.exists() else []
    return {r["trial"]: r for r in rows}  # each trial's last record


def resumed(sweep, trial) -> bool:
    return "resuming from" in (sweep / str(trial) / "train.log").read_text()


def test_cancelled_and_requeued_trials_resume_to_the_undisturbed_value(cluster, tmp_path):
    sweep, log = tmp_path / "sweep", tmp_path / "sweep.log"
    before = {job["id"] for job in cluster.jobs()}
    # Three trials on a two-CPU node: trial 2 waits for a free CPU and runs undisturbed.
    sweeper = start_sweep(cluster, sweep, 3, log)
    a, b = first_to_checkpoint(sweep, 2, sweeper, log)
    (undisturbed,) = {0, 1, 2} - {a, b}
    cancelled, requeued = job_of(sweep, a), job_of(sweep, b)
    cluster.run(["scancel", cancelled])
    cluster.run(["scontrol", "requeue", requeued])
    # A requeued job waits (its BeginTime, two minutes on) before it may start again; a test need not.
    deadline = time.time() + 120
    while cluster.state(requeued) != "PENDING":
        assert time.time() < deadline, f"the requeued job is {cluster.state(requeued)}, not pending"
        time.sleep(0.2)
    cluster.run(["scontrol", "update", f"JobId={requeued}", "StartTime=now"])
    assert sweeper.wait(timeout=900) == 0, log.read_text()[-3000:]

    rows = final_rows(sweep)
    assert sorted(rows) == [0, 1, 2]  # no trial lost, none added
    assert {r["status"] for r in rows.values()} == {"completed"} and {r["steps"] for r in rows.values()} == {200}
    assert rows[0]["value"] == rows[1]["value"] == rows[2]["value"]  # what undisturbed training reaches
    assert resumed(sweep, a) and resumed(sweep, b) and not resumed(sweep, undisturbed)
    jobs = {i: job for i, job in cluster.ended_jobs([cancelled, requeued]).items() if i not in before}
    assert jobs[cancelled]["state"].startswith("CANCELLED")  # "CANCELLED by 0"
    assert jobs[requeued]["state"] == "COMPLETED"  # the same job, requeued, finished the trial
    assert job_of(sweep, b) == requeued and job_of(sweep, a) != cancelled  # the cancelled trial got a new job
    assert len(jobs) == 4  # three trials and one relaunch: the requeued trial was not launched twice


def test_a_preempted_trial_and_a_killed_sweeper_lose_nothing_and_launch_nothing_twice(cluster, tmp_path):
    sweep, log = tmp_path / "sweep", tmp_path / "sweep.log"
    before = {job["id"] for job in cluster.jobs()}
    sweeper = start_sweep(cluster, sweep, 2, log)
    first_to_checkpoint(sweep, 2, sweeper, log)
    preempted, running = job_of(sweep, 0), job_of(sweep, 1)
    os.killpg(sweeper.pid, signal.SIGKILL)  # the sweeper dies without a word; its trials' jobs run on
    sweeper.wait()
    cluster.run(["scancel", "--signal=USR2", preempted])  # SLURM's warning before a preemption / the time limit
    while cluster.state(preempted) in ("RUNNING", "COMPLETING"):  # trial 0 saves a checkpoint and stops
        time.sleep(0.2)
    assert all(r["status"] != "completed" for r in final_rows(sweep).values())
    # The same command again: it adopts trial 1 (its job still runs, or has finished: it waits for it / reads it)
    # and launches trial 0 again (its job is gone), to resume from its checkpoint.
    sweeper = start_sweep(cluster, sweep, 2, log)
    assert sweeper.wait(timeout=900) == 0, log.read_text()[-3000:]

    rows = final_rows(sweep)
    assert sorted(rows) == [0, 1]
    assert {r["status"] for r in rows.values()} == {"completed"}
    assert rows[0]["value"] == rows[1]["value"]
    assert resumed(sweep, 0) and not resumed(sweep, 1)
    jobs = {i: job for i, job in cluster.ended_jobs([running]).items() if i not in before}
    assert job_of(sweep, 1) == running and jobs[running]["state"] == "COMPLETED"
    assert len(jobs) == 3  # the two trials and trial 0's relaunch: the adopted trial was not launched again


def test_a_trial_whose_job_is_killed_without_a_word_is_launched_again_and_resumes(cluster, tmp_path):
    """kill -9 of a trial's processes (the OOM killer, a lost node): no signal to handle, no result file; SLURM
    records the job FAILED, the sweeper launches the trial again and it resumes from its last checkpoint, to the
    value of the trial beside it, undisturbed."""
    sweep, log = tmp_path / "sweep", tmp_path / "sweep.log"
    sweeper = start_sweep(cluster, sweep, 2, log)
    [trial, _] = first_to_checkpoint(sweep, 2, sweeper, log)
    killed = job_of(sweep, trial)
    kill_job(sweep, killed)
    assert sweeper.wait(timeout=900) == 0, log.read_text()[-3000:]
    assert f"optuna: trial {trial} interrupted (its job {killed} ended without a result (state FAILED)): launched " \
           "again, it resumes from its checkpoint" in log.read_text()
    rows = final_rows(sweep)
    assert {r["status"] for r in rows.values()} == {"completed"} and rows[0]["value"] == rows[1]["value"]
    assert resumed(sweep, trial) and not resumed(sweep, 1 - trial)


def kill_job(sweep, job) -> None:
    """kill -9 of a job's processes (the OOM killer, a lost node): no signal to handle, no result file."""
    pids = [pid for pid in subprocess.run(["pgrep", "-f", f"submitit.core._submit {sweep}"], capture_output=True,
                                          text=True).stdout.split()
            if f"SLURM_JOB_ID={job}\0" in open(f"/proc/{pid}/environ", errors="replace").read()]
    assert pids
    for pid in pids:
        os.kill(int(pid), signal.SIGKILL)


def test_a_trial_interrupted_past_the_relaunch_limit_fails_saying_so_and_how_it_was_interrupted(cluster, tmp_path):
    """scancel: SIGTERM, the run checkpoints and says at which step it stopped (a job killed without a word is named
    by its job's state instead: the test above)."""
    sweep, log = tmp_path / "sweep", tmp_path / "sweep.log"
    sweeper = start_sweep(cluster, sweep, 1, log, "hydra.sweeper.max_relaunches=0")
    first_to_checkpoint(sweep, 1, sweeper, log)
    cluster.run(["scancel", job_of(sweep, 0)])
    assert sweeper.wait(timeout=600) == 2, log.read_text()[-3000:]  # the failure budget (0) is spent
    row = final_rows(sweep)[0]
    saved = max(int(p.name.split("-")[1]) for p in (sweep / "0" / "checkpoints").glob("checkpoint-*"))
    assert row["status"] == "failed" and row["reason"] == (
        f"interrupted 1 time, and hydra.sweeper.max_relaunches=0: the last time stopped by SIGTERM at step {saved}; "
        f"checkpoint saved in {sweep / '0' / 'checkpoints'}; run the same command again to resume")
    assert "trial 0: interrupted 1 time, and hydra.sweeper.max_relaunches=0" in log.read_text()


def test_without_accounting_the_sweep_says_what_it_cannot_see_and_still_runs_its_trials(tmp_path):
    """Many small clusters run without slurmdbd: sacct answers nothing, so a cancelled or dead job cannot be seen to
    end. The sweeper says so once, before the first job; trials that end by themselves still return their values
    (submitit reads their result files)."""
    why = SlurmCluster.unavailable()
    if why:
        pytest.skip(why)
    sweep, log = tmp_path / "sweep", tmp_path / "sweep.log"
    with SlurmCluster(tmp_path / "cluster", accounting=False) as cluster:
        sweeper = start_sweep(cluster, sweep, 1, log, "trainer.max_steps=20", "trainer.eval_steps=20")
        assert sweeper.wait(timeout=600) == 0, log.read_text()[-3000:]
    [warning] = [line for line in log.read_text().splitlines() if "SLURM accounting" in line]
    assert warning.endswith("optuna: SLURM accounting does not answer (sacct: Slurm accounting storage "
                            "is disabled): a trial whose job is cancelled or dies cannot be seen to end, and is not "
                            "launched again")
    assert final_rows(sweep)[0]["status"] == "completed"


def test_trials_that_end_while_the_sweeper_is_dead_are_read_from_their_jobs_not_run_again(cluster, tmp_path):
    """The sweeper is killed while its two trials' jobs run on to completion; the same command again launches no
    job for them: it reads each job's result, and the trials' own records (metrics.json) stay as their jobs wrote
    them (a relaunch would only evaluate again, and overwrite them with a zero runtime)."""
    sweep, log = tmp_path / "sweep", tmp_path / "sweep.log"
    before = {job["id"] for job in cluster.jobs()}
    sweeper = start_sweep(cluster, sweep, 2, log)
    first_to_checkpoint(sweep, 2, sweeper, log)
    jobs = [job_of(sweep, trial) for trial in (0, 1)]
    os.killpg(sweeper.pid, signal.SIGKILL)  # no sweeper watches the jobs while they finish
    sweeper.wait()
    ended = cluster.ended_jobs(jobs, timeout=600)
    assert [ended[job]["state"] for job in jobs] == ["COMPLETED", "COMPLETED"]
    written = {trial: (sweep / str(trial) / "metrics.json").read_bytes() for trial in (0, 1)}
    sweeper = start_sweep(cluster, sweep, 2, log)
    assert sweeper.wait(timeout=600) == 0, log.read_text()[-3000:]

    rows = final_rows(sweep)
    assert {r["status"] for r in rows.values()} == {"completed"} and rows[0]["value"] == rows[1]["value"]
    assert {trial: (sweep / str(trial) / "metrics.json").read_bytes() for trial in (0, 1)} == written
    assert all(json.loads(w)["train_runtime_s"] > 0 for w in written.values())
    assert {i for i in cluster.ended_jobs(jobs) if i not in before} == set(jobs)  # no job launched again
    text = log.read_text()
    for job in jobs:
        assert f"its SLURM job {job} ended (COMPLETED): reading its result" in text
    # the worker named gone is the dead sweeper (both trials'), not the one that takes them over and records them
    gone = set(re.findall(r"optuna: trial \d's worker (\S+) is gone", text))
    assert len(gone) == 1 and gone != {rows[0]["worker"]} and rows[0]["worker"] == rows[1]["worker"]
