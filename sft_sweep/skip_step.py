"""The training monitor's `skip` action: a step whose loss or gradient norm lies far outside the recent steps
is not applied (as OLMo-core's skip-step optimizer does), counted and reported.

    python -m sft_sweep monitor.actions.loss_spike=skip monitor.actions.grad_explosion=skip

Unlike the other actions, which read the logged (averaged) values, this looks at every optimizer step: the
step's loss (summed over its micro-batches) and its gradient norm before clipping, each against the mean
and standard deviation of the last `monitor.skip.window` applied steps. z = (value - mean) / std above
`monitor.skip.z_threshold` (after `min_history` steps; a non-finite value always) drops the step's
gradients before the optimizer runs, so no weight and no optimizer state changes; the schedule goes on.
"""

import math
from collections import deque

import torch
from transformers import TrainerCallback

from sft_sweep.monitor import Event, TrainingMonitor

WATCHED = {"loss_spike": "loss", "grad_explosion": "grad_norm"}


def zscore(value: float, history) -> float:
    if not math.isfinite(value):
        return math.inf
    mean = sum(history) / len(history)
    std = math.sqrt(sum((h - mean) ** 2 for h in history) / len(history))
    return (value - mean) / max(std, 1e-3 * abs(mean), 1e-8)


class SkipStep(TrainerCallback):
    def __init__(self, cfg: dict, monitor: TrainingMonitor, training_step):
        self.kinds = {kind: key for kind, key in WATCHED.items() if cfg["actions"].get(kind) == "skip"}
        self.z, self.min_history = cfg["skip"]["z_threshold"], cfg["skip"]["min_history"]
        self.history = {key: deque(maxlen=cfg["skip"]["window"]) for key in WATCHED.values()}
        self.monitor, self.training_step = monitor, training_step
        self.loss, self.grad_norm = 0.0, 0.0
        self.skipped: list[int] = []

    @classmethod
    def install(cls, trainer, cfg: dict) -> "SkipStep | None":
        monitor = TrainingMonitor.of(trainer)
        if monitor is None or "skip" not in (cfg["actions"].get(k) for k in WATCHED):
            return None
        guard = cls(cfg, monitor, trainer.training_step)
        trainer.training_step = guard.step  # wraps whatever ran the step before (the OOM fallback, say)
        trainer.add_callback(guard)
        monitor.skip_step = guard
        return guard

    def step(self, model, inputs, num_items_in_batch=None):
        loss = self.training_step(model, inputs, num_items_in_batch)
        self.loss += float(loss)
        # After this micro-batch's backward: the norm of the gradients accumulated so far (the last
        # micro-batch of a step leaves the step's), before the trainer clips them.
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        self.grad_norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float())
                                                                      for g in grads]))) if grads else 0.0
        return loss

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        values, self.loss = {"loss": self.loss, "grad_norm": self.grad_norm}, 0.0
        step = state.global_step + 1  # the step this update would complete
        for kind, key in self.kinds.items():
            history = self.history[key]
            if len(history) < self.min_history and math.isfinite(values[key]):
                continue
            z = zscore(values[key], history) if history else math.inf
            if z > self.z:
                for p in model.parameters():
                    p.grad = None  # the optimizer leaves parameters without gradients untouched
                self.skipped.append(step)
                self.monitor.state.skipped_steps = list(self.skipped)
                self.monitor.emit(Event(kind, step, {key: values[key], "z": z, "window_mean": sum(history) /
                                                     max(len(history), 1), "z_threshold": self.z}, action="skip"),
                                  report=state.is_world_process_zero)
                return
        for key, value in values.items():
            self.history[key].append(value)
