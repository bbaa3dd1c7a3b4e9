"""The Optuna sweeper on the tiny model: pruning, resume after SIGKILL, the failure budget, W&B grouping, the README's
commands (the Ray launcher's too) and the dashboard. (Workers sharing one study, and parallel submitit jobs: the
sweepers' own tests, on their toy app; the submitit launcher on a real SLURM cluster: test_slurm.py.)"""

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
from tests.helpers import REPO, embedded, render_in_chromium, run_cli
from tests.wandb_records import run_info, summary

FAST = ["trainer.max_steps=3", "trainer.eval_steps=3", "trainer.logging_steps=1", "data.val_ratio=0",
        "data.min_val_size=16", "trainer.save_strategy=no", "trainer.packing=false",
        "trainer.per_device_train_batch_size=8", "eval.enabled=false"]  # the eval loss alone steers a sweep
pytestmark = pytest.mark.slow


def trials(sweep_dir):
    return [json.loads(line) for line in (sweep_dir / "trials.jsonl").read_text().splitlines()]


def study(sweep_dir, storage="sqlite"):
    url = f"sqlite:///{sweep_dir}/optuna.db" if storage == "sqlite" else optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(sweep_dir / "optuna.journal")))
    return optuna.load_study(study_name="sft_sweep_optuna", storage=url)


@pytest.fixture(scope="module")
def pruned_sweep(tmp_path_factory):
    """Three trials in a fixed order under the median pruner: two sound learning rates, then one that cannot learn
    in 12 steps."""
    sweep = tmp_path_factory.mktemp("pruned") / "sweep"
    assert run_cli("-m", "hparams_search=optuna", "hydra.sweeper.params=null", f"hydra.sweep.dir={sweep}",
                   "optim.learning_rate=choice(0.005,0.003,0.0000001)", "hydra.sweeper.n_trials=3",
                   "+hydra.sweeper.enqueue=[{optim.learning_rate: 0.005}, {optim.learning_rate: 0.003}, "
                   "{optim.learning_rate: 0.0000001}]", "hydra/sweeper/pruner=median",
                   "hydra.sweeper.pruner.n_startup_trials=2", *FAST, "trainer.max_steps=12",
                   "trainer.eval_steps=4", "eval.enabled=true", "eval.max_samples=2", "eval.probes=[]",
                   "eval.general_path=null") == 0
    return sweep


def test_an_absurd_learning_rate_is_pruned_at_the_first_rung(pruned_sweep):
    rows = trials(pruned_sweep)
    assert [(r["trial"], r["params"]["optim.learning_rate"], r["status"]) for r in rows] == [
        (0, 0.005, "completed"), (1, 0.003, "completed"), (2, 1e-7, "pruned")]
    assert rows[2]["pruned_at_step"] == 4 and rows[2]["steps"] == 4  # stopped at the first report, not at 12
    curve = [h["eval_loss"] for h in json.loads((pruned_sweep / "2" / "log_history.json").read_text())
             if "eval_loss" in h]
    pruned = study(pruned_sweep).trials[2]
    assert pruned.state == optuna.trial.TrialState.PRUNED and pruned.intermediate_values == {4: curve[-1]}


def test_a_pruned_trial_keeps_its_records_and_skips_the_answer_level_evaluation(pruned_sweep):
    metrics = json.loads((pruned_sweep / "2" / "metrics.json").read_text())
    assert metrics["global_step"] == 4 and "eval_json_validity" not in metrics  # no answer-level evaluation
    assert "eval_json_validity" in json.loads((pruned_sweep / "0" / "metrics.json").read_text())  # completed ones do
    assert json.loads((pruned_sweep / "2" / "run_manifest.json").read_text())["status"] == "pruned"
    results = yaml.safe_load((pruned_sweep / "optimization_results.yaml").read_text())
    assert results["trials"] == {"completed": 2, "pruned": 1}
    assert "hparams_search=optuna" not in results["best_overrides"]


def test_the_sweep_report_cuts_the_pruned_curve_at_its_rung_and_links_every_trial(pruned_sweep, tmp_path):
    report = embedded(pruned_sweep / "report.html")
    curve = [h["eval_loss"] for h in json.loads((pruned_sweep / "2" / "log_history.json").read_text())
             if "eval_loss" in h]
    assert [(t["trial"], t["status"]) for t in report["trials"]] == [(0, "completed"), (1, "completed"), (2, "pruned")]
    assert [[step for step, _ in t["curve"]] for t in report["trials"]] == [[4, 8, 12], [4, 8, 12], [4]]
    assert report["trials"][2]["curve"] == [[4, curve[-1]]]
    results = yaml.safe_load((pruned_sweep / "optimization_results.yaml").read_text())
    assert report["best_trial"] == results["best_trial"]
    assert report["best_value"] == pytest.approx(results["best_value"])
    assert all((pruned_sweep / t["report"]).is_file() for t in report["trials"])
    assert report["importance"] == {}  # two completed trials: too few to say
    dom = render_in_chromium(pruned_sweep / "report.html", tmp_path / "sweep.png")
    assert 'data-ready="1"' in dom and dom.count('<tr class="best">') == 1


def test_three_trials_name_the_best_and_group_wandb_runs(tmp_path):
    sweep = tmp_path / "sweep"
    assert run_cli("-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep}",
                   "logger=wandb", *FAST) == 0
    rows = trials(sweep)
    assert [r["trial"] for r in rows] == [0, 1, 2] and all(r["status"] == "completed" for r in rows)
    hyperband = {"_target_": "optuna.pruners.HyperbandPruner", "min_resource": 3, "max_resource": 3,
                 "reduction_factor": 3}  # the preset's, scaled to these 3-step trials
    assert yaml.safe_load((sweep / "sweep.yaml").read_text())["early_stopping"] == hyperband
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best = min(rows, key=lambda r: r["value"])
    assert results["best_trial"] == best["trial"] and results["best_value"] == pytest.approx(best["value"])
    assert results["best_run_dir"] == str(sweep / str(best["trial"]))
    metrics = json.loads((sweep / str(best["trial"]) / "metrics.json").read_text())
    assert metrics["eval_loss"] == pytest.approx(results["best_value"])
    for r in rows:  # every trial ran with its own sampled config
        config = yaml.safe_load((sweep / str(r["trial"]) / ".hydra" / "config.yaml").read_text())
        lr = r["params"]["optim.learning_rate"]
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
    # the sweep report ranks the same best trial; three completed trials are enough for importances
    report = embedded(sweep / "report.html")
    assert report["early_stopping"] == hyperband
    assert "early stopping: HyperbandPruner(min_resource=3, max_resource=3, reduction_factor=3)" in (
        sweep / "report.html").read_text()
    assert [t["value"] for t in report["trials"]] == pytest.approx([r["value"] for r in rows])
    assert report["best_trial"] == results["best_trial"]
    assert set(report["importance"]) <= set(report["params"]) and sum(report["importance"].values()) == pytest.approx(1)
    assert report["best_command"] == json.loads((sweep / str(best["trial"]) / "run_manifest.json").read_text())[
        "command"]


def test_two_objectives_on_the_default_write_the_pareto_front_the_report_draws(tmp_path):
    """The README's several-objectives command on the embedded default: eval loss (minimized) against exact match
    (maximized). A sound learning rate and one that cannot learn: the sound one dominates, it alone is the front."""
    sweep = tmp_path / "sweep"
    assert run_cli("-m", "hparams_search=optuna", "hydra.sweeper.params=null", f"hydra.sweep.dir={sweep}",
                   "optim.learning_rate=choice(0.005,0.0000001)", "hydra.sweeper.n_trials=2",
                   "+hydra.sweeper.enqueue=[{optim.learning_rate: 0.005}, {optim.learning_rate: 0.0000001}]",
                   "optimized_metric=[eval_loss,eval_exact_match]", "hydra.sweeper.direction=[minimize,maximize]",
                   "hydra/sweeper/pruner=none", "hydra/sweeper/sampler=nsgaii", *FAST, "trainer.max_steps=12",
                   "trainer.eval_steps=12", "eval.enabled=true", "eval.max_samples=4", "eval.probes=[]",
                   "eval.general_path=null") == 0
    rows = trials(sweep)
    for r in rows:  # each trial's two values are its run's two metrics
        metrics = json.loads((sweep / str(r["trial"]) / "metrics.json").read_text())
        assert r["status"] == "completed" and r["value"] == pytest.approx([metrics["eval_loss"],
                                                                           metrics["eval_exact_match"]])
    assert rows[0]["value"][0] < rows[1]["value"][0] and rows[0]["value"][1] >= rows[1]["value"][1]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert [s["trial"] for s in results["solutions"]] == [0] and results["best_trial"] == 0
    report = embedded(sweep / "report.html")
    assert report["metrics"] == ["eval_loss", "eval_exact_match"] and report["pareto_front"] == [0]
    assert "eval_exact_match (maximize) vs eval_loss (minimize), Pareto front in red" in (
        sweep / "report.html").read_text()


def test_failed_trials_count_against_the_budget_and_the_sweep_goes_on_until_it_is_spent(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    common = ["-m", "hparams_search=optuna", "hydra.sweeper.params=null", "lora.r=choice(4,8,16,-1,-2)", *FAST]
    # 4 trials, at most 0.5 x 4 = 2 failures: one failure is recorded and the sweep goes on
    assert run_cli(*common, f"hydra.sweep.dir={sweep}", "hydra.sweeper.n_trials=4",
                   "+hydra.sweeper.enqueue=[{lora.r: -1}, {lora.r: 4}, {lora.r: 8}, {lora.r: 16}]") == 0
    rows = trials(sweep)
    assert [r["status"] for r in rows] == ["failed", "completed", "completed", "completed"]
    assert rows[0]["reason"] == "UserError: lora.r=-1: the LoRA rank must be a positive integer"
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["trials"]["failed"] == 1 and results["best_params"]["lora.r"] in (4, 8, 16)
    # a budget of 0.25 x 4 = 1: the second failure ends the sweep, with an error, before the other trials
    spent = tmp_path / "spent"
    assert run_cli(*common, f"hydra.sweep.dir={spent}", "hydra.sweeper.n_trials=4",
                   "hydra.sweeper.max_failure_rate=0.25",
                   "+hydra.sweeper.enqueue=[{lora.r: -1}, {lora.r: -2}, {lora.r: 8}, {lora.r: 16}]") == 2
    assert [r["status"] for r in trials(spent)] == ["failed", "failed"]
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: 2 of 2 trials failed, more than max_failure_rate=0.25 x n_trials=4 allows; the last, trial 1: "
        f"UserError: lora.r=-2: the LoRA rank must be a positive integer (see {spent / 'trials.jsonl'})")


def sweep_command(sweep, n_trials, *extra):
    return [sys.executable, "-m", "sft_sweep", "-m", "hparams_search=optuna", f"hydra.sweeper.n_trials={n_trials}",
            f"hydra.sweep.dir={sweep}", *FAST, *extra]


def test_a_worker_killed_mid_trial_is_resumed_by_running_the_command_again(tmp_path):
    sweep = tmp_path / "sweep"
    command = sweep_command(sweep, 2, "trainer.max_steps=16", "trainer.eval_steps=8", "hydra/sweeper/pruner=none",
                            "trainer.save_strategy=steps", "trainer.save_steps=4")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 300
        # trial 0 done, trial 1 saved a checkpoint (any: its first may already be rotated away)
        while not any((sweep / "1" / "checkpoints").glob("checkpoint-*/trainer_state.json")):
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert (sweep / "0" / "metrics.json").is_file() and not (sweep / "1" / "metrics.json").exists()
    first_trial = (sweep / "0" / "metrics.json").stat().st_mtime_ns
    assert [t.state.name for t in study(sweep).trials] == ["COMPLETE", "RUNNING"]

    saved = max(int(p.name.split("-")[1]) for p in (sweep / "1" / "checkpoints").glob("checkpoint-*")
                if (p / "trainer_state.json").is_file())
    assert run_cli(*command[3:]) == 0  # the same command (in this process: its imports paid)
    resumed = study(sweep)
    assert [t.state.name for t in resumed.trials] == ["COMPLETE", "COMPLETE"]  # the killed worker's trial went on
    assert (sweep / "0" / "metrics.json").stat().st_mtime_ns == first_trial  # never overwritten
    assert [(r["trial"], r["status"]) for r in trials(sweep)] == [(0, "completed"), (1, "completed")]
    # the same trial, in its own run dir, from its newest checkpoint rather than from step 0
    assert f"resuming from {sweep / '1' / 'checkpoints' / f'checkpoint-{saved}'} (step {saved})" in (
        sweep / "1" / "train.log").read_text()
    assert json.loads((sweep / "1" / "metrics.json").read_text())["global_step"] == 16
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_trial"] in (0, 1) and results["trials"] == {"completed": 2}


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
    # optuna-dashboard opens the study (its WSGI app, asked for the studies as the browser would)
    from wsgiref.util import setup_testing_defaults

    from optuna_dashboard import wsgi

    environ = {"PATH_INFO": "/api/studies"}
    setup_testing_defaults(environ)
    responses = []
    body = b"".join(wsgi(f"sqlite:///{sweep}/optuna.db")(environ, lambda status, headers, *_: responses.append(status)))
    assert responses == ["200 OK"]
    assert [s["study_name"] for s in json.loads(body)["study_summaries"]] == ["sft_sweep_optuna"]


def test_the_gpu_worker_script_starts_one_worker_per_visible_gpu(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "python").write_text('#!/bin/sh\necho "worker CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES $*"\n')
    (fake_bin / "python").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}", "CUDA_VISIBLE_DEVICES": "2,5",
           "SFT_SWEEP_LOGS": str(tmp_path / "logs")}
    proc = subprocess.run(["bash", "launch/sweep_optuna_gpus.sh", "model=qwen3_4b"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    logs = sorted((tmp_path / "logs").iterdir())
    assert [p.name for p in logs] == ["worker_gpu2.log", "worker_gpu5.log"]
    for log, gpu in zip(logs, ("2", "5")):
        assert log.read_text().strip() == (f"worker CUDA_VISIBLE_DEVICES={gpu} -m sft_sweep --multirun "
                                           f"hparams_search=optuna hydra.sweeper.storage=journal model=qwen3_4b")


def test_the_readmes_ray_launcher_command_runs_trials_in_parallel_and_none_fails(tmp_path):
    """`hydra/launcher=ray hydra.sweeper.n_jobs=2`: Ray is started once by the sweeper (its worker threads would
    race to start it), and every trial completes. (RAY_ADDRESS=local: a Ray of its own, never the cluster another
    test may have started on this machine, which ray.init would join.)"""
    sweep = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, "-m", "sft_sweep", "--multirun", "hparams_search=optuna",
                           "hydra/launcher=ray", "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=2",
                           f"hydra.sweep.dir={sweep}", *FAST],
                          cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                                             "RAY_ADDRESS": "local"},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ray.init twice" not in proc.stderr + proc.stdout
    rows = trials(sweep)
    assert sorted(r["trial"] for r in rows) == [0, 1] and all(r["status"] == "completed" for r in rows), rows
    assert all((sweep / str(i) / "metrics.json").is_file() for i in range(2))
