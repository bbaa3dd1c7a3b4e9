"""Trainer callbacks of our own beside monitor.py, preemption.py and the sweep reporters (tune_report.py,
optuna_trial.py): the console's progress, the checkpoints' README."""

import logging
import sys
import time
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from sft_sweep import metric_names as names
from sft_sweep.console import duration
from sft_sweep.run_dir import checkpoint_runtime, checkpoint_stamp, write_json

log = logging.getLogger("sft_sweep")




class CheckpointRecords(TrainerCallback):
    """At every save: the checkpoint's stamp (which data and command it was trained on: resume only takes a
    checkpoint of the same data), and the checkpoints folder's README. TRL writes a model card there that,
    for a base model loaded from a local folder (the tiny model's base_model/, a local copy of a hub model),
    names the base "[None](https://huggingface.co/None)": rewritten to say what the checkpoints are."""

    def __init__(self, base_model: str, command: str | None, data_fingerprint: str):
        self.base_model, self.command, self.data_fingerprint = base_model, command, data_fingerprint
        self.earlier = None  # training seconds of the processes before this one (a resumed run's checkpoint says)
        self.trained = 0.0  # ...and of this process's finished train() calls (a rollback starts another)
        self.started = None

    def on_train_begin(self, args, state, control, **kwargs):
        if self.earlier is None:  # this process's first train(): from scratch, or resumed from checkpoint-<step>
            self.earlier = checkpoint_runtime(Path(args.output_dir) / f"checkpoint-{state.global_step}") \
                if state.global_step else 0.0
        self.started = time.time()

    def on_train_end(self, args, state, control, **kwargs):
        self.trained += time.time() - self.started
        self.started = None

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        runtime = (self.earlier or 0.0) + self.trained + (time.time() - self.started if self.started else 0.0)
        if checkpoint.is_dir():
            write_json(checkpoint_stamp(checkpoint), {"data_fingerprint": self.data_fingerprint,
                                                      "command": self.command, names.TRAIN_RUNTIME: runtime})
        readme = Path(args.output_dir) / "README.md"
        readme.write_text(
            f"# Checkpoints of the sft-sweep run `{Path(args.output_dir).parent.name}`\n\n"
            f"Trainer checkpoints (weights, optimizer, scheduler, RNG state) saved every {args.save_steps} steps "
            f"while fine-tuning `{self.base_model}` with TRL's SFTTrainer. The run's config, command, metrics and "
            f"final weights are in the run dir above this folder.\n"
            + (f"\nRun again with:\n\n    {self.command}\n" if self.command else ""), encoding="utf-8")


class ConsoleProgress(TrainerCallback):
    """A progress bar (steps, ETA, loss, lr, tokens/s) on a terminal, one compact line per log step otherwise
    (a log file, a cluster job), one line per evaluation. Replaces transformers' ProgressCallback /
    PrinterCallback, whose output is one raw dict per log step. The throughput it shows (tokens since the
    last log / seconds since it) is also written into that log record, so log_history.json and the report's
    throughput chart hold it."""

    def __init__(self, tty: bool | None = None):
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.bar = None
        self.start = self.start_step = None
        self.last = (0.0, 0)  # (time, tokens seen) at the last training log

    @classmethod
    def install(cls, trainer, tty: bool | None = None) -> "ConsoleProgress":
        trainer.remove_callback(ProgressCallback)
        trainer.remove_callback(PrinterCallback)
        callback = cls(tty)
        trainer.add_callback(callback)
        return callback

    def on_train_begin(self, args, state, control, **kwargs):
        self.start, self.start_step = time.monotonic(), state.global_step
        self.last = (self.start, state.num_input_tokens_seen)
        if self.tty and state.is_world_process_zero:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", unit="step",
                            dynamic_ncols=True, file=sys.stderr)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if "loss" in logs:
            now, tokens = time.monotonic(), state.num_input_tokens_seen
            tokens_per_s = (tokens - self.last[1]) / max(now - self.last[0], 1e-9)
            self.last = (now, tokens)
            if state.log_history and state.log_history[-1].get("step") == state.global_step:
                state.log_history[-1]["tokens_per_s"] = tokens_per_s  # the record Trainer just appended
            fields = {"loss": f"{logs['loss']:.4f}", "lr": f"{logs.get('learning_rate', float('nan')):.2e}",
                      "grad": f"{logs['grad_norm']:.3g}" if "grad_norm" in logs else None,
                      "tok/s": f"{tokens_per_s:,.0f}"}
            fields = {k: v for k, v in fields.items() if v is not None}
            if self.bar is not None:
                self.bar.set_postfix(fields, refresh=True)
            else:
                done = state.global_step - self.start_step
                eta = (time.monotonic() - self.start) / done * (state.max_steps - state.global_step) if done else 0
                log.info("step %d/%d  %s  eta %s", state.global_step, state.max_steps,
                         "  ".join(f"{k} {v}" for k, v in fields.items()), duration(eta))
        elif any(k.startswith("eval_") for k in logs):
            shown = {k.removeprefix("eval_"): v for k, v in logs.items() if k.startswith("eval_")
                     and not k.endswith(("_runtime", "_per_second", "num_tokens"))}
            line = f"eval at step {state.global_step}: " + "  ".join(
                f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items())
            self.bar.write(line, file=sys.stderr) if self.bar is not None else log.info(line)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
