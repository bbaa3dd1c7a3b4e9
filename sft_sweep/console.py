"""What a run prints: a progress bar (steps, ETA, loss, lr, tokens/s) on a terminal, one compact line
per log step otherwise (a log file, a cluster job), one line per evaluation, and a summary at the end.

Replaces transformers' ProgressCallback/PrinterCallback, whose output is one raw dict per log step.
The throughput it shows (tokens since the last log / seconds since it) is also written into that
log record, so log_history.json and the report's throughput chart hold it.
"""

import logging
import sys
import time

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

log = logging.getLogger("sft_sweep")


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class ConsoleProgress(TrainerCallback):
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


def summary(metrics: dict, commands: dict, optimized_metric: str) -> str:
    """The end-of-run table: key metrics, then the commands to reproduce, evaluate, export and chat."""
    def num(v, spec=".4f"):
        return "-" if v is None else format(v, spec) if isinstance(v, float) else str(v)

    before = metrics.get("before_training") or {}
    monitor = metrics.get("monitor") or {}
    events = {k: v for k, v in (monitor.get("counts") or {}).items() if v}
    rows = [
        (optimized_metric, num(metrics.get(optimized_metric))),
        ("eval loss first -> last", f"{num(metrics.get('first_eval_loss'))} -> {num(metrics.get('eval_loss'))}"),
        ("JSON validity before -> after",
         f"{num(before.get('json_validity'), '.2f')} -> {num(metrics.get('eval_json_validity'), '.2f')}"),
        ("exact match before -> after",
         f"{num(before.get('exact_match'), '.2f')} -> {num(metrics.get('eval_exact_match'), '.2f')}"),
        ("forgetting (general ppl)", f"{num(metrics.get('general_perplexity_before'), '.3f')} -> "
                                     f"{num(metrics.get('general_perplexity_after'), '.3f')} "
                                     f"({num(metrics.get('forgetting_delta'), '+.3f')})"),
        ("steps, time", f"{metrics['global_step']}, {duration(metrics['train_runtime_s'])}"),
        ("tokens/s", f"{metrics['train_tokens_per_s']:,.0f}"),
        ("peak memory", ", ".join(f"{k.removesuffix('_mib')} {v:,.0f} MiB"
                                  for k, v in (metrics.get("peak_memory") or {}).items())),
        ("monitor events", ", ".join(f"{k} {v}" for k, v in events.items()) + (
            f", rollbacks {len(monitor['rollbacks'])}" if monitor.get("rollbacks") else "") or "none"),
    ]
    if oom := metrics.get("oom"):
        rows.append(("out of memory", f"{oom['retries']} retries, micro-batch {oom['micro_batch']} "
                                      f"(effective batch {oom['effective_batch']})"))
    width = max(len(k) for k, _ in rows)
    lines = ["", "run summary", *[f"  {k:<{width}}  {v}" for k, v in rows], ""]
    lines += [f"  {name:<10} {command}" for name, command in commands.items() if command]
    return "\n".join(lines)
