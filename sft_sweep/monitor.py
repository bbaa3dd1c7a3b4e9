"""Training monitor: loss spikes, gradient explosion, NaN/Inf and eval divergence -> warn / stop / rollback.

The detectors are plain classes fed one logged value at a time (unit-testable on synthetic
sequences). `TrainingMonitor` is the TrainerCallback that feeds them from the trainer's logs and
turns each event into: a console warning, a line in `<run_dir>/monitor_events.jsonl` (always,
W&B or not), a W&B alert plus `monitor/*` metrics, and the configured action.

The `skip` action judges every optimizer step rather than the logged averages (`StepOutliers`, below):
the trainer (trainer.py) asks `judge_step` after each step's last backward pass and drops the step's
gradients when it answers with an event. Rollback is carried out by the trainer's `fit`, because only it
can call `train(resume_from_checkpoint=...)` again: this callback stops training and names the
checkpoint; `on_train_begin` of the resumed run then scales the restored optimizer and scheduler
learning rates by `lr_factor`.
"""

import logging
import math
import shutil
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import TrainerCallback

from sft_sweep import metric_names as names
from sft_sweep.logger import alert
from sft_sweep.run_dir import append_jsonl, checkpoint_step, checkpoints_newest_first

log = logging.getLogger(__name__)
KINDS = ("loss_spike", "grad_explosion", "nan", "eval_divergence")
ACTIONS = {"loss_spike": ("warn", "stop", "rollback", "skip"), "grad_explosion": ("warn", "stop", "rollback", "skip"),
           "nan": ("warn", "stop", "rollback"), "eval_divergence": ("warn", "early_stop")}


@dataclass
class Event:
    kind: str
    step: int
    values: dict
    action: str = "warn"
    level: str = "WARN"
    note: str = ""


class SpikeDetector:
    """A loss above `factor` x the reference (mean or EMA of the last `window` healthy losses).
    Spikes and non-finite values don't enter the reference, so one spike can't raise the bar."""

    def __init__(self, factor=2.0, window=10, reference="mean", ema_alpha=0.3, min_history=3):
        if reference not in ("mean", "ema"):
            raise ValueError(f"monitor.reference must be mean or ema, got {reference!r}")
        self.factor, self.reference, self.alpha, self.min_history = factor, reference, ema_alpha, min_history
        self.history: deque = deque(maxlen=window)
        self.ema = None

    def ref(self):
        if len(self.history) < self.min_history:
            return None
        return self.ema if self.reference == "ema" else sum(self.history) / len(self.history)

    def update(self, loss: float) -> dict | None:
        """Returns the event's values when `loss` is a spike, else None (and it joins the reference)."""
        if not math.isfinite(loss):
            return None  # the NaN check reports it
        ref = self.ref()
        if ref is not None and loss > self.factor * ref:
            return {"loss": loss, "reference": ref, "factor": self.factor}
        self.history.append(loss)
        self.ema = loss if self.ema is None else self.alpha * loss + (1 - self.alpha) * self.ema
        return None

    def reset(self):
        self.history.clear()
        self.ema = None


class DivergenceDetector:
    """Eval loss rising `patience` evaluations in a row while the train loss falls (overfitting)."""

    def __init__(self, patience=3):
        self.patience = patience
        self.evals: list[tuple[float, float | None]] = []  # (eval loss, train loss at that time)

    def update(self, eval_loss: float, train_loss: float | None) -> dict | None:
        self.evals.append((eval_loss, train_loss))
        recent = self.evals[-(self.patience + 1):]
        if len(recent) < self.patience + 1 or any(t is None for _, t in recent):
            return None
        eval_rising = all(b[0] > a[0] for a, b in zip(recent, recent[1:]))
        train_falling = recent[-1][1] < recent[0][1]
        if eval_rising and train_falling:
            return {"eval_losses": [e for e, _ in recent], "train_losses": [t for _, t in recent]}
        return None


def zscore(value: float, history) -> float:
    if not math.isfinite(value):
        return math.inf
    mean = sum(history) / len(history)
    std = math.sqrt(sum((h - mean) ** 2 for h in history) / len(history))
    return (value - mean) / max(std, 1e-3 * abs(mean), 1e-8)


class StepOutliers:
    """The skip action's detector (monitor.actions.loss_spike|grad_explosion=skip): a step's loss (summed over its
    micro-batches) or gradient norm before clipping, against the mean and standard deviation of the last `window`
    applied steps. z above `z_threshold` (after `min_history` steps; a non-finite value always) is an outlier, as
    OLMo-core's skip-step optimizer judges; outliers do not enter the history."""

    WATCHED = {"loss_spike": "loss", "grad_explosion": "grad_norm"}

    def __init__(self, kinds, z_threshold=6.0, window=50, min_history=10):
        self.kinds = {kind: self.WATCHED[kind] for kind in kinds}
        self.z, self.min_history = z_threshold, min_history
        self.history = {key: deque(maxlen=window) for key in self.WATCHED.values()}

    def update(self, values: dict) -> tuple[str, dict] | None:
        """(kind, event values) when the step is an outlier, else None (and the step joins the history)."""
        for kind, key in self.kinds.items():
            history = self.history[key]
            if len(history) < self.min_history and math.isfinite(values[key]):
                continue
            z = zscore(values[key], history) if history else math.inf
            if z > self.z:
                return kind, {key: values[key], "z": z, "window_mean": sum(history) / max(len(history), 1),
                              "z_threshold": self.z}
        for key, value in values.items():
            self.history[key].append(value)
        return None


def check_nan(logs: dict) -> dict | None:
    bad = {k: logs[k] for k in ("loss", "grad_norm", names.EVAL_LOSS)
           if isinstance(logs.get(k), float) and not math.isfinite(logs[k])}
    return bad or None


@dataclass
class MonitorState:
    counts: dict = field(default_factory=lambda: {kind: 0 for kind in KINDS})
    events: list = field(default_factory=list)
    diverged: bool = False
    rollbacks: list = field(default_factory=list)
    rollback_to: str | None = None  # set when training stopped to roll back...
    rollback_from: int = 0  # ...at the step of this event
    skipped_steps: list = field(default_factory=list)  # steps the skip action did not apply


class TrainingMonitor(TrainerCallback):
    def __init__(self, cfg: dict, events_file: Path, checkpoints_dir: Path):
        for kind, action in cfg["actions"].items():
            if kind not in ACTIONS or action not in ACTIONS[kind]:
                raise ValueError(f"monitor.actions.{kind}={action!r}: expected one of {ACTIONS.get(kind, ())}")
        self.cfg = cfg
        self.events_file = events_file
        self.checkpoints_dir = checkpoints_dir
        self.spikes = SpikeDetector(cfg["spike_factor"], cfg["window"], cfg["reference"], cfg["ema_alpha"],
                                    cfg["min_history"])
        self.divergence = DivergenceDetector(cfg["divergence_patience"])
        skipping = [kind for kind in StepOutliers.WATCHED if cfg["actions"].get(kind) == "skip"]
        self.outliers = StepOutliers(skipping, **cfg["skip"]) if skipping else None
        self.state = MonitorState()
        self.last_train_loss = None
        self.pending_lr_factor = None
        self.lr_scale = 1.0  # product of every rollback's lr_factor so far
        self.saved_scale: dict[int, float] = {}  # checkpoint step -> lr_scale it was saved with

    # --- detection ------------------------------------------------------------------------------
    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        step = state.global_step
        events = []
        nan = check_nan(logs)
        if nan:
            events.append(Event("nan", step, nan, level="ERROR"))
        if isinstance(logs.get("loss"), float):
            spike = self.spikes.update(logs["loss"])
            if spike:
                events.append(Event("loss_spike", step, spike))
            if math.isfinite(logs["loss"]):
                self.last_train_loss = logs["loss"]
        grad = logs.get("grad_norm")
        if isinstance(grad, float) and math.isfinite(grad) and grad > self.cfg["grad_norm_threshold"]:
            events.append(Event("grad_explosion", step, {"grad_norm": grad,
                                                          "threshold": self.cfg["grad_norm_threshold"]}))
        if isinstance(logs.get(names.EVAL_LOSS), float) and math.isfinite(logs[names.EVAL_LOSS]):
            div = self.divergence.update(logs[names.EVAL_LOSS], self.last_train_loss)
            if div:
                events.append(Event("eval_divergence", step, div))
        for event in events:
            if self.cfg["actions"][event.kind] != "skip":  # skip judges each step instead: judge_step
                self.act(event, state, control)
        return control

    @property
    def skips_steps(self) -> bool:
        return self.outliers is not None

    def judge_step(self, step: int, loss: float, grad_norm: float, report: bool = True) -> bool:
        """The skip action: True when step `step` (its loss and pre-clipping gradient norm) is an outlier
        and must not be applied; the event is recorded like any other."""
        verdict = self.outliers.update({"loss": loss, "grad_norm": grad_norm})
        if verdict is None:
            return False
        kind, values = verdict
        self.state.skipped_steps.append(step)
        self.emit(Event(kind, step, values, action="skip"), report=report)
        return True

    # --- actions --------------------------------------------------------------------------------
    def act(self, event: Event, state, control) -> None:
        action = self.cfg["actions"][event.kind]
        if action == "rollback":
            target = self.good_checkpoint(event.step)
            if len(self.state.rollbacks) >= self.cfg["rollback"]["max_rollbacks"]:
                action, event.note = "stop", f"rollback limit ({self.cfg['rollback']['max_rollbacks']}) reached"
            elif target is None:
                action, event.note = "stop", "no checkpoint saved before the event to roll back to"
            else:
                self.state.rollback_to, self.state.rollback_from = str(target), event.step
                event.note = f"rolling back to {target.name}, learning rate x{self.cfg['rollback']['lr_factor']}"
                control.should_training_stop = True
        if action == "stop":
            self.state.diverged = True
            control.should_training_stop = True
            control.should_save = True
        if action == "early_stop":
            control.should_training_stop = True
        event.action = action
        if action in ("stop", "rollback"):
            event.level = "ERROR"
        # Under DDP every rank sees the same (gathered) logs and acts alike; rank 0 reports.
        self.emit(event, report=state.is_world_process_zero)

    def good_checkpoint(self, bad_step: int) -> Path | None:
        """The newest checkpoint saved strictly before the step where things went wrong."""
        return next((p for p in checkpoints_newest_first(self.checkpoints_dir) if checkpoint_step(p) < bad_step),
                    None)

    def emit(self, event: Event, report: bool = True) -> None:
        self.state.counts[event.kind] += 1
        self.state.events.append(asdict(event))
        if not report:
            return
        message = f"monitor: {event.kind} at step {event.step} -> {event.action}: {event.values}" + (
            f" ({event.note})" if event.note else "")
        log.warning(message)
        append_jsonl(self.events_file, asdict(event))
        alert(f"sft-sweep: {event.kind} ({event.action})", message, event.level,
              {**{f"monitor/{k}": v for k, v in self.state.counts.items()},
               f"monitor/{event.kind}_flag": 1, "monitor/diverged": int(self.state.diverged)})

    # --- rollback: lower the restored learning rate -----------------------------------------------
    def on_train_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        if self.pending_lr_factor is None or optimizer is None:
            return
        factor, self.pending_lr_factor = self.pending_lr_factor, None
        for group in optimizer.param_groups:
            group["lr"] *= factor
            if "initial_lr" in group:
                group["initial_lr"] *= factor
        if lr_scheduler is not None and hasattr(lr_scheduler, "base_lrs"):
            lr_scheduler.base_lrs = [lr * factor for lr in lr_scheduler.base_lrs]
        log.warning("monitor: resumed with learning rate x%s (now %s)", factor,
                    [group["lr"] for group in optimizer.param_groups])

    def on_save(self, args, state, control, **kwargs):
        self.saved_scale[state.global_step] = self.lr_scale

    def prepare_rollback(self) -> str | None:
        """Called by the task after train() returns: the checkpoint to resume from, or None.
        Checkpoints at or after the bad step belong to the abandoned timeline and are deleted."""
        target, self.state.rollback_to = self.state.rollback_to, None
        if target is None:
            return None
        bad_step = self.state.rollback_from
        for path in self.checkpoints_dir.glob("checkpoint-*"):
            if checkpoint_step(path) >= bad_step:
                shutil.rmtree(path)
        step = checkpoint_step(target)
        self.lr_scale *= self.cfg["rollback"]["lr_factor"]
        # The checkpoint restores the learning rate it was saved with; scale it to the new total.
        self.pending_lr_factor = self.lr_scale / self.saved_scale.get(step, 1.0)
        self.state.rollbacks.append({"from_step": bad_step, "to": Path(target).name, "lr_scale": self.lr_scale})
        self.spikes.reset()  # the reference restarts from the restored point
        return target

    def summary(self) -> dict:
        return {"counts": self.state.counts, names.DIVERGED: self.state.diverged, "rollbacks": self.state.rollbacks,
                "skipped_steps": self.state.skipped_steps, "events": len(self.state.events)}
