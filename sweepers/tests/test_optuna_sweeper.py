"""The optuna_pruning sweeper on a toy Hydra app (toy/app.py): the search-space grammar, fixed and deleted keys,
samplers (grid, multi-objective, custom search space, the removed MOTPE), n_jobs batches on the basic launcher and in
parallel submitit jobs, workers sharing a new study (sqlite, journal), pruners rebuilt from optuna.pruners only, the
failure budget, return values of other types, a failed trial's line, pruning through the public report function.
Where the sweeper differs on purpose from hydra-optuna-sweeper, the test says so (the README's compatibility table
lists each difference)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra_pruning_sweepers.optuna_trial import build_pruner
from hydra_pruning_sweepers.space import (
    create_optuna_distribution_from_override,
    create_params_from_overrides,
)
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

APP = Path(__file__).parent / "toy" / "app.py"


def sweep(tmp_path, *args, check=True, env=None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(APP), "--multirun", f"hydra.sweep.dir={tmp_path / 'sweep'}", *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def results(tmp_path) -> dict:
    return yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())


def rows(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "sweep" / "trials.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("override, expected", [
    ("k=choice(1,2)", CategoricalDistribution([1, 2])),
    ("k=choice(true, false)", CategoricalDistribution([True, False])),
    ("k=choice('hello', 'world')", CategoricalDistribution(["hello", "world"])),
    ("k=shuffle(range(1,3))", CategoricalDistribution([1, 2])),
    # ordered, not categorical -- and, unlike hydra-optuna-sweeper (IntDistribution(1, 3)), the range's own
    # values: Hydra's range(1,3) is 1, 2
    ("k=range(1,3)", IntDistribution(1, 2)),
    ("k=range(0,10,step=3)", IntDistribution(0, 9, step=3)),
    ("k=range(0.5, 5.5, step=1)", FloatDistribution(0.5, 4.5, step=1)),  # (theirs: up to 5.5, never a value)
    ("k=interval(1, 5)", FloatDistribution(1, 5)),
    ("k=int(interval(1, 5))", IntDistribution(1, 5)),
    ("k=tag(log, interval(1, 5))", FloatDistribution(1, 5, log=True)),
    ("k=tag(log, int(interval(1, 5)))", IntDistribution(1, 5, log=True)),
])
def test_the_sweep_grammar_becomes_optuna_distributions(override, expected):
    actual = create_optuna_distribution_from_override(OverridesParser.create().parse_overrides([override])[0])
    if isinstance(expected, CategoricalDistribution):  # (a shuffle's order is random)
        assert isinstance(actual, CategoricalDistribution) and set(actual.choices) == set(expected.choices)
    else:
        assert actual == expected


def test_plain_values_are_fixed_and_deletions_pass_through():
    assert create_params_from_overrides(["a=choice(1,2)", "b=5", "c=range(1,3)", "~z", "~w=10"]) == (
        {"a": CategoricalDistribution([1, 2]), "c": IntDistribution(1, 2)}, {"b": "5"}, ["~z", "~w=10"])


@pytest.mark.slow
def test_a_seeded_tpe_sweep_finds_the_bowl_and_keeps_a_fixed_key_out_of_the_params(tmp_path):
    proc = sweep(tmp_path, "hydra.sweeper.n_trials=20", "hydra/sweeper/sampler=tpe", "hydra.sweeper.sampler.seed=123",
                 "x=interval(-4, 4)", "y=-2")  # y fixed on the command line
    r = results(tmp_path)
    assert r["name"] == "optuna" and set(r["best_params"]) == {"x"} and "y=-2" in r["best_overrides"]
    assert r["best_value"] < 0.5  # the bowl's lowest point is 0 (x=1, y=-2)
    assert len(rows(tmp_path)) == 20 and all(row["status"] == "completed" for row in rows(tmp_path))
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_a_grid_runs_every_point_once_in_order_and_ends_cleanly_also_when_resumed(tmp_path):
    grid = ["hydra/sweeper/sampler=grid", "x=choice(-1,0,1)", "y=range(0,2)"]
    proc = sweep(tmp_path, *grid, "hydra.sweeper.n_trials=10")  # more than the 3 x 2 points
    assert "the grid has 6 points: n_trials=10 capped at 6" in proc.stdout + proc.stderr
    points = [(row["params"]["x"], row["params"]["y"]) for row in rows(tmp_path)]
    assert points == [(-1, 0), (-1, 1), (0, 0), (0, 1), (1, 0), (1, 1)]  # each once, in the grid's order
    assert results(tmp_path)["best_params"] == {"x": 1, "y": 0}
    # killed half-way, then the same command again: the remaining points, each once
    again = tmp_path / "again"
    again.mkdir()
    command = [sys.executable, str(APP), "--multirun", f"hydra.sweep.dir={again / 'sweep'}", *grid, "steps=40",
               "hydra.sweeper.n_trials=6"]
    proc = subprocess.Popen(command, cwd=again, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (again / "sweep" / "trials.jsonl").is_file() or len(rows(again)) < 3:
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    subprocess.run(command, cwd=again, check=True, capture_output=True, timeout=300)
    done = [r for r in rows(again) if r["status"] == "completed"]
    assert sorted((r["params"]["x"], r["params"]["y"]) for r in done) == sorted(points)  # every point, once


@pytest.mark.slow
def test_two_objectives_write_the_pareto_front(tmp_path):
    # on_record: the app's own hook (toy/app.py's `recorded`), after each trial's record and after the results
    sweep(tmp_path, "objectives=2", "hydra/sweeper/sampler=nsgaii", "hydra.sweeper.sampler.seed=1",
          "hydra.sweeper.sampler.population_size=8", "hydra.sweeper.n_trials=16", "hydra.sweeper.direction=[minimize,"
          "minimize]", "hydra.sweeper.metric=[bowl,other]", "hydra.sweeper.on_record=__main__.recorded")
    r = results(tmp_path)
    front = r["solutions"]
    assert front and all(set(s) >= {"params", "value", "trial", "run_dir"} for s in front)

    def dominates(a, b):
        return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))

    assert not any(dominates(a["value"], b["value"]) for a in front for b in front)
    every = [row["value"] for row in rows(tmp_path) if row["status"] == "completed"]
    assert all(not any(dominates(v, s["value"]) for v in every) for s in front)  # nothing beats the front
    assert r["best_trial"] == min(front, key=lambda s: s["value"][0])["trial"]  # best_trial_by: the first objective
    assert yaml.safe_load((tmp_path / "sweep" / "sweep.yaml").read_text())["metric"] == ["bowl", "other"]
    calls = [json.loads(line) for line in (tmp_path / "sweep" / "hook.jsonl").read_text().splitlines()]
    # one call per trial's row, each seeing that row written, then one after optimization_results.yaml
    assert [c["final"] for c in calls] == [False] * 16 + [True]
    assert [c["rows"] for c in calls[:-1]] == list(range(1, 17)) and calls[-1]["results"]


@pytest.mark.slow
def test_a_pruner_with_two_objectives_is_refused_in_one_line(tmp_path):
    proc = sweep(tmp_path, "objectives=2", "hydra.sweeper.direction=[minimize,minimize]",
                 "hydra/sweeper/pruner=median", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: hydra/sweeper/pruner: Optuna prunes single-objective studies only, and this one has 2 objectives; "
        "use hydra/sweeper/pruner=none"]
    assert not (tmp_path / "sweep").exists()


@pytest.mark.slow
def test_a_custom_search_space_adds_parameters_the_app_suggests(tmp_path):
    sweep(tmp_path, "hydra.sweeper.custom_search_space=app.extend", "hydra/sweeper/sampler=random",
          "hydra.sweeper.sampler.seed=3", "z_within=0.25", env={"PYTHONPATH": str(APP.parent)})
    for row in rows(tmp_path):
        assert abs(row["params"]["z"] - row["params"]["x"]) <= 0.25 and 0 <= row["params"]["+w"] <= 1
    config = yaml.safe_load((tmp_path / "sweep" / "0" / ".hydra" / "config.yaml").read_text())
    assert config["w"] == rows(tmp_path)[0]["params"]["+w"]  # a new key, added with +


@pytest.mark.slow
@pytest.mark.parametrize("rate", [0.5, 1.0])
def test_the_failure_budget_is_a_share_of_n_trials_over_the_whole_sweep(rate, tmp_path):
    """Ours counts failed trials over the sweep (a resumed sweep keeps counting); hydra-optuna-sweeper counts per batch
    of n_jobs. Either way 1.0 never stops, and a stop names the trial's own error."""
    proc = sweep(tmp_path, "fail=true", "hydra.sweeper.n_trials=6", f"hydra.sweeper.max_failure_rate={rate}",
                 check=False)
    failed = [row for row in rows(tmp_path) if row["status"] == "failed"]
    assert all(row["reason"] == "RuntimeError: the toy app failed on purpose" for row in failed)
    # each failure on the console: its trial, its run dir, its exception's last line
    assert f"optuna: trial 0 failed ({tmp_path / 'sweep' / '0'}): RuntimeError: the toy app failed on purpose" in (
        proc.stdout + proc.stderr)
    if rate == 1.0:
        assert proc.returncode == 0 and len(failed) == 6 and "the toy app failed" not in proc.stderr
    else:
        assert proc.returncode == 2 and len(failed) == 4  # 3 failures are allowed (0.5 x 6), the 4th stops it
        [line] = proc.stderr.strip().splitlines()
        assert line.startswith("error: 4 of 4 trials failed, more than max_failure_rate=0.5 x n_trials=6 allows; the "
                               "last, trial 3: RuntimeError: the toy app failed on purpose")


@pytest.mark.slow
def test_the_removed_motpe_sampler_is_one_line(tmp_path):
    proc = sweep(tmp_path, "hydra/sweeper/sampler=motpe", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: The 'motpe' sampler was removed in Optuna 4.0: use hydra/sweeper/sampler=tpe (TPESampler handles "
        "multi-objective studies now) or nsgaii"]


@pytest.mark.slow
@pytest.mark.parametrize("returns", ["numpy", "string"])
def test_numbers_of_other_types_are_values(returns, tmp_path):
    sweep(tmp_path, f"returns={returns}", "hydra.sweeper.n_trials=3")
    assert [row["status"] for row in rows(tmp_path)] == ["completed"] * 3
    assert isinstance(results(tmp_path)["best_value"], float)


@pytest.mark.slow
def test_n_jobs_on_the_basic_launcher_runs_batches_in_this_process(tmp_path):
    sweep(tmp_path, "hydra.sweeper.n_trials=8", "hydra.sweeper.n_jobs=3")
    assert sorted(row["trial"] for row in rows(tmp_path)) == list(range(8))
    assert len({row["worker"] for row in rows(tmp_path)}) == 1


@pytest.mark.slow
def test_n_jobs_on_submitit_local_runs_trials_in_parallel_processes(tmp_path):
    """hydra/launcher=submitit_local with n_jobs=2: two trials at once, each a submitit job (its own process)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the submitit extra is not installed")
    sweep(tmp_path, "hydra/launcher=submitit_local", "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=2", "steps=2",
          "+step_s=0.5")
    assert sorted(row["trial"] for row in rows(tmp_path)) == [0, 1]
    assert {row["status"] for row in rows(tmp_path)} == {"completed"}
    spans = []
    for trial in (0, 1):
        job = yaml.safe_load((tmp_path / "sweep" / str(trial) / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]
        [result] = (tmp_path / "sweep" / ".submitit").glob(f"{job['id']}/*_result.pkl")  # the job's own
        spans.append(((tmp_path / "sweep" / str(trial) / ".hydra" / "config.yaml").stat().st_mtime,  # the job began
                      result.stat().st_mtime))  # it ended
    (a0, a1), (b0, b1) = spans
    assert a0 < b1 and b0 < a1  # the two ran at the same time


@pytest.mark.slow
def test_the_public_report_function_prunes_a_weak_trial(tmp_path):
    """The app reports its curve with optuna_trial.report; a trial far from the bowl's bottom is pruned (its curve
    stops at a rung) and recorded so; the app run alone (no sweep) is unchanged by the call."""
    enqueue = "[{x: 1.0, y: -2}, {x: 1.1, y: -2}, {x: 1.2, y: -2}, {x: 4.0, y: 4}]"
    sweep(tmp_path, "steps=30", "hydra.sweeper.n_trials=4", "hydra/sweeper/pruner=median",
          "hydra.sweeper.pruner.n_startup_trials=3", f"hydra.sweeper.enqueue={enqueue}")
    assert [(row["trial"], row["status"]) for row in rows(tmp_path)] == [
        (0, "completed"), (1, "completed"), (2, "completed"), (3, "pruned")]
    # steps: the last step each reported; the pruned one's is the rung it was pruned at
    assert [row["steps"] for row in rows(tmp_path)[:3]] == [30] * 3
    assert rows(tmp_path)[3]["steps"] == rows(tmp_path)[3]["pruned_at_step"] < 30
    alone = subprocess.run([sys.executable, str(APP), "steps=5", f"hydra.run.dir={tmp_path / 'alone'}"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert alone.returncode == 0, alone.stderr


def test_a_pruner_is_rebuilt_only_from_optuna_pruners_with_plain_arguments():
    """A trial rebuilds the sweep's pruner from what the study's storage says (a shared database, a journal file):
    a name outside optuna.pruners, or an argument that is not a plain value, is refused, never imported or called."""
    assert type(build_pruner({"name": "MedianPruner", "module": "optuna.pruners",
                              "kwargs": {"n_startup_trials": 2}})).__name__ == "MedianPruner"
    with pytest.raises(ValueError, match="pruner os.system: not a class of optuna.pruners"):
        build_pruner({"name": "system", "module": "os", "kwargs": {}})
    with pytest.raises(ValueError, match="not a class of optuna.pruners"):
        build_pruner({"name": "TYPE_CHECKING", "module": "optuna.pruners", "kwargs": {}})  # there, not a pruner
    with pytest.raises(ValueError, match="plain values"):
        build_pruner({"name": "MedianPruner", "module": "optuna.pruners", "kwargs": {"n_startup_trials": [1]}})


@pytest.mark.slow
def test_a_pruner_of_another_module_is_refused_in_one_line(tmp_path):
    proc = sweep(tmp_path, "hydra.sweeper.pruner._target_=subprocess.getoutput", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: hydra.sweeper.pruner: pruner subprocess.getoutput: not a class of optuna.pruners"]


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["sqlite", "journal"])
def test_three_workers_started_at_once_on_a_new_study_share_it(storage, tmp_path):
    """They race to create the study (sqlite: its tables, 'table studies already exists'; journal: the file): the
    sweep dir's lock takes them one at a time; between them they run n_trials, each once, and more than one of them
    takes trials (each takes half a second). The journal is what workers on several machines share (an NFS file)."""
    argv = [sys.executable, str(APP), "--multirun", f"hydra.sweep.dir={tmp_path / 'sweep'}",
            f"hydra.sweeper.storage={storage}", "hydra.sweeper.n_trials=9", "steps=2", "+step_s=0.25"]
    workers = [subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(3)]
    for worker in workers:
        _, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err[-3000:]
    assert sorted(row["trial"] for row in rows(tmp_path)) == list(range(9))
    assert {row["status"] for row in rows(tmp_path)} == {"completed"}
    assert len({row["worker"] for row in rows(tmp_path)}) >= 2  # (the last to start may find none left)
    assert len({json.dumps(row["params"], sort_keys=True) for row in rows(tmp_path)}) == 9  # sampled apart
