"""Optuna sweeps on the tiny model: best trial named, W&B runs grouped, failures recorded, resume."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml

from sft_sweep.reproduce import main as reproduce
from tests.helpers import run_cli
from tests.wandb_records import run_info, summary

FAST = ["trainer.max_steps=3", "trainer.eval_steps=3", "trainer.logging_steps=1", "data.val_ratio=0",
        "data.min_val_size=16", "trainer.save_strategy=no"]


def trials(sweep_dir):
    return [json.loads(line) for line in (sweep_dir / "trials.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_three_trials_name_the_best_and_group_wandb_runs(tmp_path):
    sweep = tmp_path / "sweep"
    assert run_cli("-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep}",
                   "logger=wandb", *FAST) == 0
    rows = trials(sweep)
    assert [r["trial"] for r in rows] == [0, 1, 2] and all(r["status"] == "completed" for r in rows)
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best = min(rows, key=lambda r: r["value"])
    assert results["best_trial"] == best["trial"] and results["best_value"] == pytest.approx(best["value"])
    assert results["best_run_dir"] == str(sweep / str(best["trial"]))
    metrics = json.loads((sweep / str(best["trial"]) / "metrics.json").read_text())
    assert metrics["eval_loss"] == pytest.approx(results["best_value"])
    # every trial ran with its own sampled config
    for r in rows:
        config = yaml.safe_load((sweep / str(r["trial"]) / ".hydra" / "config.yaml").read_text())
        lr = float(next(o for o in r["overrides"] if o.startswith("optim.learning_rate=")).split("=")[1])
        assert config["optim"]["learning_rate"] == pytest.approx(lr) and 1e-5 <= lr <= 1e-3
    records = list((tmp_path / "wandb").glob("offline-run-*/*.wandb"))
    runs = [run_info(p) for p in records]
    assert len(runs) == 4 and {r["group"] for r in runs} == {"sweep"}
    trial_runs = [r for r in runs if r["name"] != "sweep-summary"]
    assert len(trial_runs) == 3
    assert all("optim.learning_rate=" in r["name"] and "lora.r=" in r["name"] for r in trial_runs)
    sweep_summary = next(summary(p) for p, r in zip(records, runs) if r["name"] == "sweep-summary")
    assert sweep_summary["best_value"] == pytest.approx(results["best_value"])
    assert sweep_summary["best_trial"] == results["best_trial"]
    # the best trial reproduces from its saved config
    again = tmp_path / "again"
    assert reproduce([str(sweep), "--best", f"hydra.run.dir={again}"]) == 0
    assert json.loads((again / "metrics.json").read_text())["eval_loss"] == pytest.approx(metrics["eval_loss"],
                                                                                         abs=1e-6)


@pytest.mark.slow
def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path):
    sweep = tmp_path / "sweep"
    assert run_cli("-m", "hparams_search=optuna", "hydra.sweeper.params=null", "lora.r=choice(8,-1)",
                   "hydra.sweeper.n_trials=4", f"hydra.sweep.dir={sweep}", *FAST) == 0
    rows = trials(sweep)
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(rows) == 4 and failed and len(failed) < 4
    assert all("lora.r=-1" in r["overrides"] and "lora.r=-1: the LoRA rank must be a positive integer" in r["reason"]
               for r in failed)
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["trials"] == {"complete": 4 - len(failed), "failed": len(failed)}
    assert results["best_params"] == {"lora.r": 8}


@pytest.mark.slow
def test_interrupted_sweep_resumes_only_the_owed_trials(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "sft_sweep", "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3",
           f"hydra.sweep.dir={sweep}", "trainer.max_steps=40", "trainer.eval_steps=20", "data.val_ratio=0",
           "data.min_val_size=16", "trainer.save_strategy=no"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 240
        while not (sweep / "1" / ".hydra").is_dir():  # trial 0 done, trial 1 started
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert (sweep / "0" / "metrics.json").is_file() and not (sweep / "1" / "metrics.json").exists()
    first_trial = (sweep / "0" / "metrics.json").stat().st_mtime_ns
    storage = f"sqlite:///{sweep}/optuna.db"
    states = [t.state for t in optuna.load_study(study_name="sft_sweep_optuna", storage=storage).trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING]

    subprocess.run(cmd, cwd=tmp_path, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    study = optuna.load_study(study_name="sft_sweep_optuna", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert [t.user_attrs.get("interrupted", False) for t in study.trials] == [False, True, False, False]
    assert (sweep / "0" / "metrics.json").stat().st_mtime_ns == first_trial  # never overwritten
    # the interrupted trial is on record, and its run dir says so
    assert [(r["trial"], r["status"]) for r in trials(sweep)] == [(0, "completed"), (1, "interrupted"),
                                                                  (2, "completed"), (3, "completed")]
    assert json.loads((sweep / "1" / "run_manifest.json").read_text())["status"] == "interrupted"
    assert all((sweep / str(i) / "metrics.json").is_file() for i in (0, 2, 3))
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_trial"] in (0, 2, 3) and results["trials"] == {"complete": 3, "failed": 1}


@pytest.mark.slow
def test_readme_commands_sweep_resume_and_reproduce_in_the_stable_dir(tmp_path, monkeypatch, capsys):
    """The README's commands as a new user types them (plus a small budget), from a fresh directory."""
    monkeypatch.chdir(tmp_path)
    command = ["--multirun", "hparams_search=optuna", "hydra.sweeper.n_trials=2", *FAST]
    assert run_cli(*command) == 0
    sweep = tmp_path / "outputs" / "sweeps" / "sft_sweep_optuna"  # the stable dir, not a timestamp
    assert [p.name for p in (tmp_path / "outputs" / "sweeps").iterdir()] == ["sft_sweep_optuna"]
    first = trials(sweep)
    assert [r["trial"] for r in first] == [0, 1]
    # the same command again: the study is done, nothing runs twice
    assert run_cli(*command) == 0
    assert trials(sweep) == first and not (sweep / "2").exists()
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    capsys.readouterr()
    assert reproduce(["outputs/sweeps/sft_sweep_optuna", "--best"]) == 0
    assert "running: python -m sft_sweep --config-path" in capsys.readouterr().out
    [again] = list((tmp_path / "outputs" / "runs").iterdir())
    assert json.loads((again / "metrics.json").read_text())["eval_loss"] == pytest.approx(results["best_value"],
                                                                                         abs=1e-6)
