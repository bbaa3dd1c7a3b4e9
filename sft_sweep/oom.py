"""Out of GPU memory in a training step: retry it in smaller pieces instead of losing the run.

`trainer.on_oom: retry` (the default): when a step raises torch.OutOfMemoryError, its micro-batch is split
in two and each half runs forward+backward in turn, gradients accumulating; from then on every step is
split that way (halving again on the next OOM, down to one row per piece). Per-device batch halves and
gradient accumulation doubles in effect: the effective batch, the loss normalization (TRL divides the
summed token loss by the tokens of the whole accumulated batch) and the learning rate stay the same --
unlike transformers' `auto_find_batch_size`, which halves the batch and restarts.

The trainable parameters' gradients are copied before each step so that a step that failed halfway
through its backward pass restarts from the gradients it began with (for LoRA that copy is the adapter's
size; for full fine-tuning it is one copy of the gradients: choose `on_oom: fail` if that is too much).
Every retry is logged as a warning and recorded (metrics.json `oom`, the W&B summary).
"""

import logging

import torch

log = logging.getLogger("sft_sweep")


def rows(inputs: dict) -> int:
    return next(v.shape[0] for v in inputs.values() if isinstance(v, torch.Tensor) and v.dim() > 0)


def split(inputs: dict, pieces: int) -> list[dict]:
    n = rows(inputs)
    bounds = [round(i * n / pieces) for i in range(pieces + 1)]
    return [{k: v[a:b] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == n else v
             for k, v in inputs.items()} for a, b in zip(bounds, bounds[1:]) if b > a]


class OomFallback:
    def __init__(self, trainer, training_step):
        self.trainer, self.training_step = trainer, training_step
        self.pieces = 1
        self.events: list[dict] = []

    @classmethod
    def install(cls, trainer, on_oom: str) -> "OomFallback | None":
        if on_oom != "retry":
            return None
        fallback = cls(trainer, trainer.training_step)
        trainer.training_step = fallback.step  # the instance's, the one Trainer's loop calls
        trainer.oom_fallback = fallback
        return fallback

    @staticmethod
    def of(trainer) -> "OomFallback | None":
        return getattr(trainer, "oom_fallback", None)

    def step(self, model, inputs, num_items_in_batch=None):
        params = [p for p in model.parameters() if p.requires_grad]
        while True:
            saved = [None if p.grad is None else p.grad.clone() for p in params]
            try:
                return self.run(model, inputs, num_items_in_batch)
            except torch.OutOfMemoryError:
                n = rows(inputs)
                if self.pieces >= n:
                    raise
                for p, g in zip(params, saved):  # back to the gradients the step began with
                    p.grad = g
                del saved
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                self.pieces *= 2
                micro = -(-n // self.pieces)
                event = {"step": self.trainer.state.global_step + 1, "micro_batch": micro, "pieces": self.pieces,
                         "effective_batch": n * self.trainer.args.gradient_accumulation_steps *
                         self.trainer.args.world_size}
                self.events.append(event)
                log.warning("OUT OF MEMORY at step %d: retrying with micro-batches of %d (x%d per batch of %d; "
                            "effective batch %d and learning rate unchanged)", event["step"], micro, self.pieces, n,
                            event["effective_batch"])

    def run(self, model, inputs, num_items_in_batch):
        if self.pieces == 1:
            return self.training_step(model, inputs, num_items_in_batch)
        trainer, pieces = self.trainer, split(inputs, self.pieces)
        # A loss normalized by num_items_in_batch sums correctly over pieces; a mean loss is divided by
        # the accumulation steps, which the pieces multiply.
        scaled = not ((trainer.model_accepts_loss_kwargs and num_items_in_batch is not None)
                      or trainer.compute_loss_func is not None)
        accumulation = trainer.current_gradient_accumulation_steps
        if scaled:
            trainer.current_gradient_accumulation_steps = accumulation * len(pieces)
        try:
            return sum(self.training_step(model, piece, num_items_in_batch) for piece in pieces)
        finally:
            trainer.current_gradient_accumulation_steps = accumulation

    def summary(self) -> dict | None:
        if not self.events:
            return None
        return {"retries": len(self.events), "micro_batch": self.events[-1]["micro_batch"],
                "effective_batch": self.events[-1]["effective_batch"], "events": self.events}
