"""ASHA after a resume: the rungs come back from the trials' reports, so a weak trial that arrives first after
the restart is still compared with the trials before it (Ray's own ASHAScheduler starts again with empty rungs)."""

import json
from types import SimpleNamespace

import pytest

pytest.importorskip("ray.tune", reason="the ray extra is not installed")
from hydra_pruning_sweepers.asha_scheduler import ResumableASHAScheduler  # noqa: E402
from ray.tune.schedulers import ASHAScheduler, TrialScheduler  # noqa: E402

ASHA = {"time_attr": "step", "metric": "eval_loss", "mode": "min", "grace_period": 2, "reduction_factor": 2,
        "max_t": 8}  # rungs at steps 2 and 4
REPORTED = "eval_loss"  # the metric's name in the reports (the sweeper passes conf.metric)


def trial(index, last_result=None):
    return SimpleNamespace(trial_id=f"5e1f0_{index:05d}", last_result=last_result or {})


def interrupted_sweep(sweep_dir):
    """What the trials of the interrupted sweep wrote before each report (tune_progress.jsonl)."""
    progress = {0: [(2, 3.0), (4, 2.5), (8, 2.0)],   # trained to max_t
                1: [(2, 3.5)],                       # stopped at the first rung
                2: [(2, 3.2), (2, 3.1), (4, float("nan"))]}  # restarted once, then diverged (NaN is never reported)
    for index, rows in progress.items():
        (sweep_dir / str(index)).mkdir()
        (sweep_dir / str(index) / "tune_progress.jsonl").write_text(
            "".join(json.dumps({"step": s, "time": 0.0, "eval_loss": v}) + "\n" for s, v in rows))
    return [trial(i, {"step": rows[-1][0], "eval_loss": rows[-1][1]}) for i, rows in progress.items()]


def resumed(scheduler, sweep_dir):
    for restored in interrupted_sweep(sweep_dir):  # Tuner.restore adds back every saved trial
        scheduler.on_trial_add(None, restored)
    return scheduler


def test_the_rungs_are_rebuilt_from_the_reports_of_the_trials_before_the_resume(tmp_path):
    scheduler = resumed(ResumableASHAScheduler(str(tmp_path), REPORTED, **ASHA), tmp_path)
    weak, fair = trial(3), trial(4)
    scheduler.on_trial_add(None, weak)
    scheduler.on_trial_add(None, fair)
    # The rung at step 2 holds 3.0, 3.5 and 3.2 (each trial's first report there stands: trial 2's restart
    # re-reported 3.1), the rung at step 4 holds 2.5. So a first report of 3.3 stops (worse than the median, 3.2),
    # 3.15 goes on, then 2.6 at step 4 (worse than 2.5, the rung's only record) stops.
    assert scheduler.on_trial_result(None, weak, {"step": 2, "eval_loss": 3.3}) == TrialScheduler.STOP
    assert scheduler.on_trial_result(None, fair, {"step": 2, "eval_loss": 3.15}) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, fair, {"step": 4, "eval_loss": 2.6}) == TrialScheduler.STOP


def test_ray_s_own_asha_forgets_its_rungs_on_resume(tmp_path):
    """Why the subclass exists: the same resume with Ray's scheduler lets the weak trial through."""
    scheduler = resumed(ASHAScheduler(**ASHA), tmp_path)
    weak = trial(3)
    scheduler.on_trial_add(None, weak)
    assert scheduler.on_trial_result(None, weak, {"step": 2, "eval_loss": 3.3}) == TrialScheduler.CONTINUE


def test_a_new_trial_replays_nothing_even_where_an_old_sweep_left_reports(tmp_path):
    interrupted_sweep(tmp_path)  # the dir of an earlier sweep, not resumed (hydra.sweeper.resume=false)
    scheduler = ResumableASHAScheduler(str(tmp_path), REPORTED, **ASHA)
    for index in range(3):
        scheduler.on_trial_add(None, trial(index))  # new trials have no last result
    weak = trial(3)
    scheduler.on_trial_add(None, weak)
    assert scheduler.on_trial_result(None, weak, {"step": 2, "eval_loss": 3.3}) == TrialScheduler.CONTINUE  # empty
