"""Training monitor: detectors on synthetic logs, then real runs that stop, roll back and alert W&B."""

import json
import math

import pytest
from transformers import TrainerControl, TrainerState

from sft_sweep.monitor import DivergenceDetector, SpikeDetector, TrainingMonitor, check_nan
from tests.helpers import TINY, plain, run_cli
from tests.wandb_records import alerts, history, summary


def spikes(values, **kw):
    detector = SpikeDetector(**kw)
    return [i for i, v in enumerate(values) if detector.update(v)]


def test_no_spike_verdict_before_a_reference_exists():
    assert spikes([9.0, 50.0, 100.0], min_history=3) == []


def test_spike_against_running_mean_and_spikes_do_not_raise_the_bar():
    assert spikes([2.0, 2.0, 2.0, 4.1, 4.1, 2.0, 3.9]) == [3, 4]
    detector = SpikeDetector()
    for v in (2.0, 2.0, 2.0, 9.0):
        detector.update(v)
    assert detector.ref() == 2.0


def test_slowly_rising_loss_is_not_a_spike():
    assert spikes([1.0 + 0.1 * i for i in range(40)], window=10) == []


def test_ema_reference():
    detector = SpikeDetector(reference="ema", ema_alpha=0.5, min_history=2)
    assert [detector.update(v) is not None for v in (4.0, 2.0, 6.5, 6.0)] == [False, False, True, False]
    assert detector.ref() == pytest.approx(4.5)  # 4 -> 3 (2.0) -> 4.5 (6.0); the spike 6.5 was left out


def test_single_nan_and_inf():
    assert check_nan({"loss": float("nan"), "grad_norm": 1.0}).keys() == {"loss"}
    assert check_nan({"loss": 1.0, "grad_norm": float("inf")}).keys() == {"grad_norm"}
    assert check_nan({"loss": 1.0, "grad_norm": 2.0}) is None
    assert spikes([2.0, 2.0, 2.0, float("nan"), 2.1]) == []  # NaN is the NaN check's, not a spike


def test_divergence_needs_eval_rising_while_train_falls():
    d = DivergenceDetector(patience=3)
    verdicts = [d.update(e, t) for e, t in [(2.0, 3.0), (2.1, 2.8), (2.2, 2.6), (2.3, 2.4)]]
    assert verdicts[:3] == [None, None, None] and verdicts[3]["eval_losses"] == [2.0, 2.1, 2.2, 2.3]
    d = DivergenceDetector(patience=3)
    assert [d.update(e, t) for e, t in [(2.0, 2.0), (2.1, 2.1), (2.2, 2.2), (2.3, 2.3)]] == [None] * 4
    d = DivergenceDetector(patience=2)
    assert [d.update(e, t) for e, t in [(2.0, 3.0), (2.1, 2.8), (2.05, 2.6), (2.2, 2.4)]] == [None] * 4


def monitor(tmp_path, **actions):
    cfg = plain()["monitor"]
    cfg["actions"].update(actions)
    (tmp_path / "checkpoints").mkdir(exist_ok=True)
    return TrainingMonitor(cfg, tmp_path / "monitor_events.jsonl", tmp_path / "checkpoints")


def feed(mon, logs_by_step):
    state, control = TrainerState(), TrainerControl()
    for step, logs in logs_by_step:
        state.global_step = step
        mon.on_log(None, state, control, logs=logs)
    return control


def test_stop_action_marks_diverged_and_asks_for_a_checkpoint(tmp_path):
    mon = monitor(tmp_path)
    control = feed(mon, [(1, {"loss": 2.0, "grad_norm": 1.0}), (2, {"loss": float("nan"), "grad_norm": 1.0})])
    assert control.should_training_stop and control.should_save and mon.state.diverged
    events = [json.loads(line) for line in (tmp_path / "monitor_events.jsonl").read_text().splitlines()]
    assert [(e["kind"], e["step"], e["action"], e["level"]) for e in events] == [("nan", 2, "stop", "ERROR")]


def test_warn_action_only_records(tmp_path):
    mon = monitor(tmp_path)
    healthy = [(i, {"loss": 2.0, "grad_norm": 1.0}) for i in range(1, 5)]
    control = feed(mon, healthy + [(5, {"loss": 5.0, "grad_norm": 11.0})])
    assert not control.should_training_stop and not mon.state.diverged
    assert mon.state.counts == {"loss_spike": 1, "grad_explosion": 1, "nan": 0, "eval_divergence": 0}
    assert len((tmp_path / "monitor_events.jsonl").read_text().splitlines()) == 2


def test_rollback_picks_the_checkpoint_before_the_event_and_stops_without_one(tmp_path):
    mon = monitor(tmp_path, grad_explosion="rollback")
    control = feed(mon, [(3, {"loss": 2.0, "grad_norm": 50.0})])
    assert mon.state.diverged and control.should_save  # nothing to roll back to: stop
    assert "no checkpoint saved before the event" in json.loads((tmp_path / "monitor_events.jsonl").read_text())["note"]
    for step in (5, 10, 15):
        (tmp_path / "checkpoints" / f"checkpoint-{step}").mkdir()
    mon = monitor(tmp_path, grad_explosion="rollback")
    control = feed(mon, [(15, {"loss": 2.0, "grad_norm": 50.0})])
    assert control.should_training_stop and not control.should_save and not mon.state.diverged
    assert mon.prepare_rollback().endswith("checkpoint-10")
    assert not (tmp_path / "checkpoints" / "checkpoint-15").exists()  # the abandoned timeline is removed
    assert mon.pending_lr_factor == 0.5


def test_rollback_limit_then_stop(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "checkpoint-1").mkdir()
    mon = monitor(tmp_path, loss_spike="rollback")
    mon.cfg["rollback"]["max_rollbacks"] = 1
    mon.state.rollbacks.append({"from_step": 9, "to": "checkpoint-1", "lr_scale": 0.5})
    feed(mon, [(i, {"loss": 2.0}) for i in range(2, 6)] + [(6, {"loss": 9.0})])
    assert mon.state.diverged and mon.state.events[-1]["note"] == "rollback limit (1) reached"


def test_bad_action_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="monitor.actions.eval_divergence='rollback'"):
        monitor(tmp_path, eval_divergence="rollback")


HUGE_LR = ["optim.learning_rate=3", "trainer.logging_steps=2", "trainer.max_steps=30"]


@pytest.mark.slow
def test_huge_learning_rate_run_is_stopped_and_marked_diverged(tmp_path, capsys):
    run_dir = tmp_path / "r"
    assert run_cli(f"hydra.run.dir={run_dir}", *TINY, *HUGE_LR, "monitor.actions.grad_explosion=stop") == 3
    assert "error: training diverged (stopped at step 4)" in capsys.readouterr().err
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["diverged"] is True and metrics["global_step"] == 4
    assert (run_dir / "checkpoints" / "checkpoint-4").is_dir()  # saved when stopped
    events = [json.loads(line) for line in (run_dir / "monitor_events.jsonl").read_text().splitlines()]
    assert events[0]["kind"] == "grad_explosion" and events[0]["action"] == "stop" and events[0]["step"] == 4


ROLLBACK = ["optim.learning_rate=0.5", "optim.warmup_steps=0.5", "trainer.max_steps=40", "trainer.logging_steps=2",
            "trainer.save_steps=4", "trainer.eval_steps=20", "monitor.actions.loss_spike=rollback",
            "monitor.rollback.lr_factor=0.1"]


def scheduled_lr(step, peak=0.5, warmup=20, total=40):
    """transformers' cosine schedule with linear warmup, as configured in ROLLBACK."""
    if step < warmup:
        return peak * step / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


@pytest.mark.slow
def test_rollback_restores_state_lowers_lr_and_finishes_finite(tmp_path):
    run_dir = tmp_path / "rb"
    assert run_cli(f"hydra.run.dir={run_dir}", *TINY, *ROLLBACK, "trainer.save_total_limit=null") == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["diverged"] is False and metrics["global_step"] == 40 and math.isfinite(metrics["eval_loss"])
    events = [json.loads(line) for line in (run_dir / "monitor_events.jsonl").read_text().splitlines()]
    spike = next(e for e in events if e["action"] == "rollback")
    bad, restored = spike["step"], (spike["step"] - 1) // 4 * 4  # newest checkpoint (every 4 steps) before it
    assert metrics["monitor"]["rollbacks"] == [{"from_step": bad, "to": f"checkpoint-{restored}", "lr_scale": 0.1}]
    history = [h for h in json.loads((run_dir / "log_history.json").read_text()) if "loss" in h]
    assert [h["step"] for h in history] == list(range(2, 41, 2))  # one timeline: the restored one
    lr = {h["step"]: h["learning_rate"] for h in history}
    # Up to the checkpoint: the original schedule. After it: the *restored* scheduler (not a restart)
    # at 0.1 x -- the optimizer and scheduler state came back from the checkpoint.
    for step in range(2, 41, 2):
        factor = 1.0 if step <= restored else 0.1
        # (the learning rate logged at step s is the one its update used: schedule(s - 1))
        assert lr[step] == pytest.approx(factor * scheduled_lr(step - 1), rel=1e-5, abs=1e-9), step
    assert all(math.isfinite(h["loss"]) for h in history)


@pytest.mark.slow
def test_wandb_offline_run_records_alerts_and_counters(tmp_path):
    run_dir = tmp_path / "w"
    assert run_cli(f"hydra.run.dir={run_dir}", *TINY, *HUGE_LR, "trainer.max_steps=6", "logger=wandb") == 0
    events = [json.loads(line) for line in (run_dir / "monitor_events.jsonl").read_text().splitlines()]
    assert events and all(e["action"] == "warn" for e in events)
    record = next((tmp_path / "wandb").glob("offline-run-*/*.wandb"))
    assert alerts(record) == [f"sft-sweep: {e['kind']} (warn)" for e in events]
    counts = summary(record)
    n = sum(e["kind"] == "grad_explosion" for e in events)
    assert n > 0 and counts["monitor/grad_explosion"] == n and counts["monitor/rollbacks"] == 0
    assert max(h.get("monitor/grad_explosion", 0) for h in history(record)) == n


@pytest.mark.slow
def test_skip_action_drops_a_planted_bad_batch_and_changes_no_weight(tmp_path):
    import torch
    from transformers import TrainerCallback

    from sft_sweep.recipe import setup
    from sft_sweep.run_dir import RunDir

    c = plain(*TINY, "trainer.max_steps=30", "trainer.eval_strategy=no", "trainer.eval_on_start=false",
              "monitor.actions.loss_spike=skip", "monitor.skip.window=8", "monitor.skip.min_history=8",
              "monitor.skip.z_threshold=4")
    trainer, _ = setup(c, RunDir(tmp_path))
    collate, calls = trainer.data_collator, [0]

    def planted(rows):  # batch 25: every trained label replaced by a random token
        batch = collate(rows)
        calls[0] += 1
        if calls[0] == 25:
            trained = batch["labels"] != -100
            batch["labels"][trained] = torch.randint(0, 1000, (int(trained.sum()),), generator=torch.Generator()
                                                     .manual_seed(0))
        return batch

    trainer.data_collator = planted
    weights = {}

    class Snapshot(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            weights[state.global_step] = [p.detach().clone() for p in model.parameters() if p.requires_grad]

    trainer.add_callback(Snapshot())
    trainer.train()
    same = [all(torch.equal(a, b) for a, b in zip(weights[s - 1], weights[s])) for s in range(2, 31)]
    assert [s for s, unchanged in zip(range(2, 31), same) if unchanged] == [25]  # only the planted step
    [event] = [json.loads(line) for line in (tmp_path / "monitor_events.jsonl").read_text().splitlines()]
    assert event["kind"] == "loss_spike" and event["action"] == "skip" and event["step"] == 25
    assert event["values"]["z"] > 4
    assert trainer.monitor.summary()["skipped_steps"] == [25]  # reported in metrics.json
