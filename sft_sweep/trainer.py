"""The trainer: TRL's SFTTrainer plus what sft-sweep adds to the training loop, in plain sight.

    compute_loss    the cross-entropy of the trained tokens only (loss.py): never the full logits, no per-step
                    entropy or token accuracy over the whole vocabulary
    training_step   one micro-batch, forward + backward: retried in smaller pieces when it runs out of
                    memory (trainer.on_oom), and after a step's last micro-batch the monitor's skip action
    fit             train() from a checkpoint when resuming; after a monitor rollback, train() again from
                    the checkpoint it names; a signal ends it with a checkpoint (RunInterrupted)

Everything else is TRL's and transformers' own loop; the callbacks beside it (monitor.py, console.py,
preemption.py, the sweep reporters) watch it and are listed where the recipe builds the trainer.

Out of memory (`trainer.on_oom: retry`, the default): when a step raises torch.OutOfMemoryError, its
micro-batch is split in two and each half runs forward+backward in turn, gradients accumulating; from then
on every step is split that way (halving again on the next OOM, down to one row per piece). Per-device batch
halves and gradient accumulation doubles in effect: the effective batch, the loss normalization (the summed
token loss is divided by the tokens of the whole accumulated batch) and the learning rate stay the same --
unlike transformers' `auto_find_batch_size`, which halves the batch and restarts. The trainable parameters'
gradients are copied before each step so that a step that failed halfway through its backward pass restarts
from the gradients it began with (for LoRA that copy is the adapter's size; for full fine-tuning it is one
copy of the gradients: choose `on_oom: fail` if that is too much).
"""

import logging
from pathlib import Path

import torch
from trl import SFTTrainer

from sft_sweep.loss import nll_sum, supports_trained_positions_loss
from sft_sweep.run_dir import checkpoint_runtime, checkpoint_step

log = logging.getLogger("sft_sweep")


def rows(inputs: dict) -> int:
    return next(v.shape[0] for v in inputs.values() if isinstance(v, torch.Tensor) and v.dim() > 0)


def split(inputs: dict, pieces: int) -> list[dict]:
    """A batch as `pieces` consecutive slices of its rows (every row once)."""
    n = rows(inputs)
    bounds = [round(i * n / pieces) for i in range(pieces + 1)]
    return [{k: v[a:b] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == n else v
             for k, v in inputs.items()} for a, b in zip(bounds, bounds[1:]) if b > a]


def whole_run_loss_mean(log_history: list, start: int, last_mean: float | None, end: int) -> float:
    """The training loss's mean over every step of the run, when its last train() call (the last process after a
    resume, or the last segment after a rollback) began at step `start`: transformers' `train_loss` (`last_mean`)
    covers steps start..end only; the steps before it come from the logged losses (each the mean of its
    logging interval), weighted by their intervals."""
    total = covered = 0
    for h in log_history:
        if "loss" in h and h["step"] <= start:
            total += h["loss"] * (h["step"] - covered)  # the logged mean covers the steps since the last log
            covered = h["step"]
    if last_mean is not None and not covered:
        return last_mean  # one train() from the first step: transformers' own figure
    if last_mean is not None and end > start:
        total, covered = total + last_mean * (end - start), covered + end - start
    return total / covered if covered else float("nan")


class Trainer(SFTTrainer):
    def __init__(self, *args, monitor=None, stop=None, reporter=None, on_oom: str = "retry", **kwargs):
        """The callbacks the run asks afterwards, also among `callbacks`: `monitor` (TrainingMonitor: the skip
        action, rollbacks), `stop` (GracefulStop), `reporter` (a sweep trial's TuneReporter or OptunaReporter);
        `on_oom`: retry | fail."""
        super().__init__(*args, **kwargs)
        self.monitor, self.stop, self.reporter, self.on_oom = monitor, stop, reporter, on_oom
        self.pieces = 1  # each micro-batch runs in this many pieces (> 1 after an out-of-memory retry)
        self.oom_events: list[dict] = []
        self.step_loss = 0.0  # summed over the micro-batches of the current optimizer step (the skip action's)

    # --- the loss ----------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The summed cross-entropy of the trained tokens divided by `num_items_in_batch` (the trained tokens of the
        whole accumulated batch: transformers' normalization), computed on trained positions only (loss.py).

        TRL's own loss scores every position over the whole vocabulary on a GPU without Triton or on a CPU,
        recomputes it in the backward pass, and computes entropy and token accuracy on every step for its logs:
        on a model whose output layer dominates (Qwen3 up to 4B), most of a step. Here the loss and gradients are
        the same to float rounding, at the cost of the trained positions alone. TRL's path stays for what it
        handles and this does not: another loss type, label smoothing, a custom loss function, a head that is not
        a plain linear layer, callers that want the logits."""
        if (return_outputs or self.args.loss_type != "nll" or self.label_smoother is not None
                or self.compute_loss_func is not None or not supports_trained_positions_loss(model)):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        nll, trained = nll_sum(model, inputs)
        loss = nll / (num_items_in_batch if num_items_in_batch is not None else max(trained, 1))
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # num_items_in_batch counts every rank's tokens and DDP averages the gradients (as Trainer does)
            loss = loss * self.accelerator.num_processes
        return loss

    # --- one micro-batch ---------------------------------------------------------------------------------
    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = self.training_step_in_pieces(model, inputs, num_items_in_batch)
        if self.monitor is not None and self.monitor.skips_steps:
            self.step_loss += float(loss)
            if self.accelerator.sync_gradients:  # the step's last micro-batch: its gradients are complete
                self.skip_if_outlier(model)
        return loss

    def training_step_in_pieces(self, model, inputs, num_items_in_batch):
        if self.on_oom != "retry":
            return super().training_step(model, inputs, num_items_in_batch)
        params = [p for p in model.parameters() if p.requires_grad]
        while True:
            saved = [None if p.grad is None else p.grad.clone() for p in params]
            try:
                return self.run_pieces(model, inputs, num_items_in_batch)
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
                event = {"step": self.state.global_step + 1, "micro_batch": micro, "pieces": self.pieces,
                         "effective_batch": n * self.args.gradient_accumulation_steps * self.args.world_size}
                self.oom_events.append(event)
                log.warning("OUT OF MEMORY at step %d: retrying with micro-batches of %d (x%d per batch of %d; "
                            "effective batch %d and learning rate unchanged)", event["step"], micro, self.pieces, n,
                            event["effective_batch"])

    def run_pieces(self, model, inputs, num_items_in_batch):
        if self.pieces == 1:
            return super().training_step(model, inputs, num_items_in_batch)
        pieces = split(inputs, self.pieces)
        # A loss normalized by num_items_in_batch sums correctly over pieces; a mean loss is divided by
        # the accumulation steps, which the pieces multiply.
        scaled = not ((self.model_accepts_loss_kwargs and num_items_in_batch is not None)
                      or self.compute_loss_func is not None)
        accumulation = self.current_gradient_accumulation_steps
        if scaled:
            self.current_gradient_accumulation_steps = accumulation * len(pieces)
        try:
            return sum(super(Trainer, self).training_step(model, piece, num_items_in_batch) for piece in pieces)
        finally:
            self.current_gradient_accumulation_steps = accumulation

    def skip_if_outlier(self, model) -> None:
        """The skip action: a step whose loss or gradient norm (before clipping) is an outlier keeps no gradient,
        so the optimizer changes no weight and no state of its own; the schedule goes on."""
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        grad_norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
                          ) if grads else 0.0
        loss, self.step_loss = self.step_loss, 0.0
        if self.monitor.judge_step(self.state.global_step + 1, loss, grad_norm, report=self.is_world_process_zero()):
            for p in model.parameters():
                p.grad = None  # the optimizer leaves parameters without gradients untouched

    def oom_summary(self) -> dict | None:
        """What the out-of-memory retries did (metrics.json `oom`), or None."""
        if not self.oom_events:
            return None
        last = self.oom_events[-1]
        return {"retries": len(self.oom_events), "micro_batch": last["micro_batch"],
                "effective_batch": last["effective_batch"], "events": self.oom_events}

    # --- the whole training --------------------------------------------------------------------------------
    def fit(self, checkpoint=None) -> dict:
        """train() (from `checkpoint` when resuming), again from the last good checkpoint after each monitor
        rollback; a signal ends it with a checkpoint (RunInterrupted). Returns the last segment's TrainOutput
        metrics with the whole run's figures: the runtime summed over its segments and over the processes before
        a resume (the checkpoint's stamp), the loss mean over every step (whole_run_loss_mean)."""
        earlier = checkpoint_runtime(checkpoint) if checkpoint is not None else 0.0
        if checkpoint is not None:
            log.info("resuming from %s (step %d)", checkpoint, checkpoint_step(checkpoint))
            if (final := self.final_checkpoint_metrics(checkpoint)) is not None:
                return {**final, "train_runtime": earlier}
        runtime, output = 0.0, None
        while output is None or (self.monitor is not None and (checkpoint := self.monitor.prepare_rollback())):
            start = checkpoint_step(checkpoint) if checkpoint else 0
            output = self.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
            runtime += output.metrics["train_runtime"]
            if self.stop is not None:
                self.stop.raise_if_stopped(self.state, self.args.output_dir)
        return {**output.metrics, "train_runtime": earlier + runtime, "train_loss": whole_run_loss_mean(
            self.state.log_history, start, output.metrics["train_loss"], self.state.global_step)}

    def final_checkpoint_metrics(self, checkpoint) -> dict | None:
        """A checkpoint of the run's last step (saved before its end-of-run evaluation was interrupted): its weights
        and state, and no step trained -- transformers' train() would train one step past max_steps. Returns the
        training metrics (the mean of the logged losses; no time spent), or None for any earlier checkpoint."""
        from peft import PeftModel, set_peft_model_state_dict
        from safetensors.torch import load_file
        from transformers import TrainerState
        from transformers.trainer_utils import load_sharded_checkpoint

        checkpoint = Path(checkpoint)
        state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
        if state.global_step < state.max_steps or self.args.max_steps not in (-1, state.max_steps):
            return None
        model = self.accelerator.unwrap_model(self.model)
        if isinstance(model, PeftModel):
            set_peft_model_state_dict(model, load_file(checkpoint / "adapter_model.safetensors"))
        elif (checkpoint / "model.safetensors").is_file():
            model.load_state_dict(load_file(checkpoint / "model.safetensors"), strict=False)
        else:
            load_sharded_checkpoint(model, str(checkpoint))
        self.state = state
        log.info("%s is the run's last step: its weights, no more training", checkpoint.name)
        return {"train_loss": whole_run_loss_mean(state.log_history, state.global_step, None, state.global_step)}
