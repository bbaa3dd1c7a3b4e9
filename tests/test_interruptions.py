"""Ctrl-C and SIGTERM at every moment of a run and a sweep: setup, the evaluation before training, training (an
Optuna trial in the sweeper's process), the end-of-run evaluation. Each ends in one line, exit code 75, the manifest
`interrupted`, a checkpoint where training could make one -- and the same command resumes. (SIGTERM to an ASHA
sweep's driver is the sweepers' own: sweepers/tests/test_asha_sweeper.py.)"""

import json
import signal
import subprocess
import sys

import pytest

from tests.helpers import TINY, env_without_network, read, run_cli, wait_for

pytestmark = pytest.mark.slow
RUN = [*TINY, "trainer.logging_steps=1", "trainer.save_steps=4", "trainer.save_total_limit=null", "eval.max_samples=4",
       "eval.probes=[]", "eval.general_path=null"]
# The entrypoint with one moment of the run held: the named function writes the marker file, then waits (so a
# signal lands there); training steps are slowed a little so a signal lands mid-training too.
HELD = """
import os, pathlib, runpy, sys, time, transformers
from sft_sweep import evaluation, recipe
marker, where = sys.argv[1], sys.argv[2]
def hold(function):
    def held(*a, **k):
        pathlib.Path(marker).write_text("held")
        time.sleep(60)
        return function(*a, **k)
    return held
if where == "setup":
    recipe.build_datasets = hold(recipe.build_datasets)
elif where == "before":
    evaluation.Evaluation.before = hold(evaluation.Evaluation.before)
elif where == "after":
    evaluation.Evaluation.after = hold(evaluation.Evaluation.after)
step = transformers.Trainer.training_step
def slow(self, *a, **k):
    time.sleep(0.2)
    return step(self, *a, **k)
transformers.Trainer.training_step = slow
sys.argv = ["sft_sweep", *sys.argv[3:]]
runpy.run_module("sft_sweep", run_name="__main__")
"""

def start(tmp_path, where: str, *args) -> tuple[subprocess.Popen, object]:
    marker = tmp_path / f"held-{where}"
    proc = subprocess.Popen([sys.executable, "-c", HELD, str(marker), where, *args], cwd=tmp_path,
                            env=env_without_network(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, marker

def ends_in_one_line(proc, timeout=120) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 75, err[-3000:]
    assert "Traceback" not in err and "Traceback" not in out
    [line] = [line for line in err.splitlines() if line.startswith("error: ")]
    assert line == err.strip().splitlines()[-1]
    return line


@pytest.mark.parametrize("where, sig, phase", [("setup", signal.SIGINT, "setup"),
                                               ("before", signal.SIGTERM, "the evaluation before training")])
def test_a_signal_before_training_stops_at_once_and_the_command_starts_again(where, sig, phase, tmp_path):
    run_dir = tmp_path / "run"
    proc, marker = start(tmp_path, where, f"hydra.run.dir={run_dir}", *RUN)
    wait_for(marker, proc)
    proc.send_signal(sig)
    line = ends_in_one_line(proc)
    assert line == f"error: stopped by {sig.name} during {phase}; run the same command again to resume"
    manifest = read(run_dir / "run_manifest.json")
    assert manifest["status"] == "interrupted"
    assert manifest["error"].startswith(f"RunInterrupted: stopped by {sig.name}")
    assert not list(run_dir.glob("checkpoints/checkpoint-*"))  # nothing trained, nothing to save
    assert run_cli(f"hydra.run.dir={run_dir}", *RUN) == 0  # the same command, in this process (its imports paid)
    assert read(run_dir / "run_manifest.json")["status"] == "completed"


def test_a_signal_in_the_end_of_run_evaluation_resumes_from_the_last_step_without_training_again(tmp_path):
    reference = tmp_path / "reference"
    assert run_cli(f"hydra.run.dir={reference}", *RUN) == 0
    run_dir = tmp_path / "run"
    proc, marker = start(tmp_path, "after", f"hydra.run.dir={run_dir}", *RUN)
    wait_for(marker, proc)
    proc.send_signal(signal.SIGTERM)
    assert ends_in_one_line(proc) == ("error: stopped by SIGTERM during the end-of-run evaluation; run the same "
                                      "command again to resume")
    assert read(run_dir / "run_manifest.json")["status"] == "interrupted"
    assert (run_dir / "checkpoints" / "checkpoint-12" / "trainer_state.json").is_file()  # the last step, saved
    assert run_cli(f"hydra.run.dir={run_dir}", *RUN) == 0
    log = (run_dir / "train.log").read_text()
    assert "checkpoint-12 is the run's last step: its weights, no more training" in log
    resumed, uninterrupted = read(run_dir / "metrics.json"), read(reference / "metrics.json")
    assert resumed["global_step"] == 12 and resumed["eval_loss"] == uninterrupted["eval_loss"]  # the same model
    assert read(run_dir / "run_manifest.json")["status"] == "completed"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_in_an_optuna_trial_checkpoints_it_and_the_same_command_resumes_it(sig, tmp_path):
    sweep = tmp_path / "sweep"
    sweep_args = ["-m", "hparams_search=optuna", f"hydra.sweep.dir={sweep}", "hydra.sweeper.n_trials=2",
                  "hydra/sweeper/pruner=none", *RUN, "trainer.max_steps=16", "trainer.eval_steps=8",
                  "trainer.save_strategy=steps", "eval.enabled=false"]
    proc, _ = start(tmp_path, "nowhere", *sweep_args)
    wait_for(sweep / "0" / "checkpoints" / "checkpoint-4" / "trainer_state.json", proc)
    proc.send_signal(sig)
    line = ends_in_one_line(proc)
    assert line.startswith(f"error: the sweep stopped: trial 0 was interrupted (stopped by {sig.name} at step ")
    assert line.endswith("run the same command again to resume it")
    [row] = [json.loads(r) for r in (sweep / "trials.jsonl").read_text().splitlines()]
    assert row["trial"] == 0 and row["status"] == "interrupted"
    assert read(sweep / "0" / "run_manifest.json")["status"] == "interrupted"
    saved = max(int(p.name.split("-")[1]) for p in (sweep / "0" / "checkpoints").glob("checkpoint-*"))
    assert 4 < saved < 16  # saved at the step where it stopped
    assert run_cli(*sweep_args) == 0
    rows = {r["trial"]: r for r in map(json.loads, (sweep / "trials.jsonl").read_text().splitlines())}
    # the interrupted trial itself went on (its own run dir, from its checkpoint), then the next one ran
    assert [(n, rows[n]["status"]) for n in sorted(rows)] == [(0, "completed"), (1, "completed")]
    assert f"resuming from {sweep / '0' / 'checkpoints' / f'checkpoint-{saved}'} (step {saved})" in (
        sweep / "0" / "train.log").read_text()
    assert read(sweep / "0" / "metrics.json")["global_step"] == 16
