"""Standard benchmarks through lm-evaluation-harness (sft_sweep/bench.py): our local task scored in the run, before
and after training, answer for answer as lm-eval's own evaluation scores the exported model, loading it itself; bad
task names and tasks whose data is not here stop in one line before training."""

import json
import subprocess
import sys

import pytest
import yaml

from sft_sweep import bench, trained
from sft_sweep import metric_names as names
from sft_sweep.errors import UserError
from sft_sweep.run_dir import RunDir
from tests.helpers import TINY, embedded, read, run_cli

pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (pip install 'sft-sweep[bench]')")
pytestmark = pytest.mark.slow


def test_unknown_tasks_and_tasks_without_their_data_are_one_line(tmp_path):
    with pytest.raises(UserError, match=r"^eval.benchmarks: no lm-eval task 'sft_sweep_arth' \(closest: "
                                        r"sft_sweep_arith"):
        bench.check(["sft_sweep_arth"], str(tmp_path))
    with pytest.raises(UserError, match=r"^eval.benchmarks: task 'gsm8k' cannot load its data here "
                                        r".*HF_DATASETS_CACHE"):
        bench.check(["gsm8k"], str(tmp_path))  # offline (conftest): the hub's data is not in this cache


def test_the_runs_scores_are_lm_evals_own_on_the_export(tmp_path):
    run_dir = tmp_path / "run"
    assert run_cli(f"hydra.run.dir={run_dir}", *TINY, "trainer.max_steps=30", "eval.max_samples=4",
                   "eval.benchmarks=[sft_sweep_arith]", "eval.benchmarks_before=true") == 0
    metrics = read(run_dir / "metrics.json")
    scores = read(run_dir / "benchmarks.json")
    after = scores["after"]["results"]["sft_sweep_arith"]["exact_match"]["value"]
    assert metrics["bench_sft_sweep_arith_exact_match"] == after
    assert metrics["before_bench_sft_sweep_arith_exact_match"] == scores["before"]["results"]["sft_sweep_arith"][
        "exact_match"]["value"]
    samples = [json.loads(line) for line in (run_dir / "benchmark_samples.jsonl").read_text().splitlines()]
    ours = {s["doc_id"]: s["response"] for s in samples if s["when"] == "after"}
    assert len(ours) == bench.LOCAL_ROWS and len(samples) == 2 * bench.LOCAL_ROWS
    assert after == pytest.approx(sum(s["exact_match"] for s in samples if s["when"] == "after") / bench.LOCAL_ROWS)
    # beside the other results: the run report's table and the W&B table (bench.table), before and after
    task_scores = {when: scores[when]["results"]["sft_sweep_arith"] for when in ("before", "after")}
    assert list(task_scores["after"]) == ["exact_match", "chrf"]  # the task's two metrics, each a row
    assert embedded(run_dir / "report.html")["benchmarks"] == [
        ["sft_sweep_arith", metric, task_scores["before"][metric]["value"], score["value"], score["stderr"]]
        for metric, score in task_scores["after"].items()]

    assert subprocess.run([sys.executable, "-m", "sft_sweep.export", f"run_dir={run_dir}"], capture_output=True,
                          timeout=600).returncode == 0
    # lm-eval's own evaluation, loading the export itself (after) and the run's base model with the template settings
    # the run evaluated it with (before): the same answers to every document, so the same scores. (simple_evaluate,
    # which lm-eval's command line calls, in this process: a command line would index lm-eval's thousands of tasks
    # in each of two more processes.)
    import lm_eval

    before_args = trained.template_kwargs(RunDir(run_dir), (run_dir / "base_model" / "chat_template.jinja").read_text())
    local_only = bench.task_manager([bench.LOCAL_TASK])  # (the data cache the run wrote the task into)
    for when, model in (("after", run_dir / "merged"), ("before", run_dir / "base_model")):
        model_args = {"pretrained": str(model), **(before_args if when == "before" else {})}
        out = lm_eval.simple_evaluate(model="hf", model_args=model_args, tasks=[bench.LOCAL_TASK],
                                      task_manager=local_only, apply_chat_template=True, device="cpu", batch_size=32,
                                      log_samples=True, bootstrap_iters=0)
        theirs = out["results"][bench.LOCAL_TASK]
        their_answers = {s["doc_id"]: s["filtered_resps"][0] for s in out["samples"][bench.LOCAL_TASK]}
        assert their_answers == {s["doc_id"]: s["response"] for s in samples if s["when"] == when}, when
        assert [theirs[f"{metric},none"] for metric in task_scores[when]] == [
            score["value"] for score in task_scores[when].values()], when


def test_a_sweep_on_a_benchmark_score_ranks_its_trials_by_that_score(tmp_path):
    """Three trials (two learning rates that learn, one that cannot) maximizing lm-eval's chrF on the local task:
    each trial's value is its run's score, the best is the highest, the sweep report shows every trial's scores."""
    sweep, metric = tmp_path / "sweep", names.bench(bench.LOCAL_TASK, "chrf")
    assert run_cli("-m", "hparams_search=optuna", "hydra.sweeper.params=null", f"hydra.sweep.dir={sweep}",
                   "optim.learning_rate=choice(0.005,0.001,0.0000001)", "hydra.sweeper.n_trials=3",
                   "+hydra.sweeper.enqueue=[{optim.learning_rate: 0.005}, {optim.learning_rate: 0.001}, "
                   "{optim.learning_rate: 0.0000001}]", "hydra/sweeper/pruner=none", f"optimized_metric={metric}",
                   "hydra.sweeper.direction=maximize", *TINY, "trainer.max_steps=30", "eval.max_samples=2",
                   "eval.probes=[]", "eval.general_path=null", "eval.before_training=false",
                   "eval.benchmarks=[sft_sweep_arith]") == 0
    rows = [json.loads(line) for line in (sweep / "trials.jsonl").read_text().splitlines()]
    scores = {r["trial"]: read(sweep / str(r["trial"]) / "metrics.json")[metric] for r in rows}
    assert {r["trial"]: r["value"] for r in rows} == scores and all(r["status"] == "completed" for r in rows)
    assert len(set(scores.values())) > 1  # chrF gives partial credit: the trials differ, though none is exact
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_trial"] == max(scores, key=scores.get) and results["best_value"] == max(scores.values())
    report = embedded(sweep / "report.html")
    assert report["best_trial"] == results["best_trial"]
    assert [t["benchmarks"] for t in report["trials"]] == [
        {k: v for k, v in read(sweep / str(n) / "metrics.json").items() if k.startswith(names.BENCH_PREFIX)}
        for n in sorted(scores)]
    assert f"<th>{names.bench(bench.LOCAL_TASK, 'exact_match')}</th>" in (sweep / "report.html").read_text()
