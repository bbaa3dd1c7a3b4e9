"""The Ray Tune ASHA sweeper on the tiny model: trials stop early, two run at once, results named."""

import json

import pytest
import yaml

from tests.helpers import run_cli


@pytest.mark.slow
def test_asha_stops_weak_trials_early_and_runs_two_at_once(tmp_path):
    sweep = tmp_path / "asha"
    assert run_cli("-m", "hparams_search=asha", "hydra.sweeper.num_samples=5", "trainer.max_steps=12",
                   "trainer.eval_steps=2", "hydra.sweeper.scheduler.grace_period=2",
                   "hydra.sweeper.scheduler.reduction_factor=2", "hydra.sweeper.ray_init.num_cpus=2",
                   "data.val_ratio=0", "data.min_val_size=16", f"hydra.sweep.dir={sweep}") == 0
    rows = [json.loads(line) for line in (sweep / "trials.jsonl").read_text().splitlines()]
    assert [r["trial"] for r in rows] == [0, 1, 2, 3, 4]
    statuses = [r["status"] for r in rows]
    assert "stopped early" in statuses and "completed" in statuses
    for r in rows:
        progress = [json.loads(line) for line in (sweep / str(r["trial"]) / "tune_progress.jsonl").read_text()
                    .splitlines()]
        assert progress[0]["step"] == 0 and progress[-1]["step"] == r["steps"]  # written before each report
        assert r["best_eval_loss"] == pytest.approx(min(p["eval_loss"] for p in progress))
        finished = (sweep / str(r["trial"]) / "metrics.json").is_file()
        assert finished == (r["status"] == "completed")
        if r["status"] == "stopped early":
            assert r["steps"] < 12
        config = yaml.safe_load((sweep / str(r["trial"]) / ".hydra" / "config.yaml").read_text())
        assert config["lora"]["r"] == r["params"]["lora.r"]  # each trial ran its own sampled config
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    scored = [r for r in rows if r["status"] in ("completed", "stopped early")]
    best = min(scored, key=lambda r: r["best_eval_loss"])
    assert results["best_trial"] == best["trial"] and results["best_run_dir"] == str(sweep / str(best["trial"]))
    assert f"lora.r={best['params']['lora.r']}" in results["best_overrides"]
    assert (sweep / "trials.md").read_text().count("\n") == 2 + 5
    # with 2 CPUs and 1 CPU per trial, two trials ran at the same time
    spans = []
    for r in rows:
        times = [json.loads(line)["time"] for line in (sweep / str(r["trial"]) / "tune_progress.jsonl")
                 .read_text().splitlines()]
        spans.append((min(times), max(times)))
    assert any(a0 < b1 and b0 < a1 for i, (a0, a1) in enumerate(spans) for (b0, b1) in spans[i + 1:])
