"""What a run prints on the console: its progress (callbacks.ConsoleProgress), the end-of-run summary, and
only our own lines.

Only our own lines reach the console: the libraries' log records and Python warnings go to the run's
train.log (conf/hydra/default.yaml's job_logging: the console handler takes `OurLines` as its filter),
and their progress bars are off (`quiet_libraries`). `python -m sft_sweep -v ...` shows everything.
"""

import logging
import os

from sft_sweep import metric_names as names

log = logging.getLogger("sft_sweep")


VERBOSE = "SFT_SWEEP_VERBOSE"  # set by `-v` (sft_sweep/__main__.py); trials in other processes inherit it
OURS = ("sft_sweep", "hydra_pruning_sweepers", "hydra_plugins.hydra_pruning_sweepers", "__main__")


def verbose() -> bool:
    return os.environ.get(VERBOSE, "") not in ("", "0")


class OurLines(logging.Filter):
    """The console handler's filter: sft-sweep's own records (everything with -v)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return verbose() or record.name.startswith(OURS)


class ConsoleFormatter(logging.Formatter):
    """Our lines as they are; a warning or error says so first."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def quiet_libraries() -> None:
    """The libraries' console output into the logging tree (where the console's filter keeps it out and
    train.log keeps it), and their progress bars off -- unless -v."""
    if verbose():
        return
    import datasets
    import transformers

    logging.captureWarnings(True)  # warnings.warn -> the "py.warnings" logger
    transformers.utils.logging.disable_default_handler()  # transformers and datasets print to stderr themselves
    transformers.utils.logging.enable_propagation()
    datasets_logger = logging.getLogger("datasets")
    for handler in [h for h in datasets_logger.handlers if type(h) is logging.StreamHandler]:
        datasets_logger.removeHandler(handler)
    datasets_logger.propagate = True
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def cli_logging() -> None:
    """For the small CLIs (data, evaluate, export, chat): our log lines on stderr, the libraries' quiet."""
    if not logging.getLogger().handlers:  # (a caller that configured logging keeps its own)
        handler = logging.StreamHandler()
        handler.addFilter(OurLines())
        handler.setFormatter(ConsoleFormatter("%(message)s"))
        logging.basicConfig(level=logging.INFO, handlers=[handler])
    quiet_libraries()


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def summary(metrics: dict, commands: dict, optimized: list[str]) -> str:
    """The end-of-run table: key metrics, then the commands to reproduce, evaluate, export and chat."""
    def num(v, spec=".4f"):
        return "-" if v is None else format(v, spec) if isinstance(v, float) else str(v)

    def before_after(name, spec=".2f"):
        return f"{num(metrics.get(names.before(name)), spec)} -> {num(metrics.get(name), spec)}"

    monitor = metrics.get(names.MONITOR) or {}
    events = {k: v for k, v in (monitor.get("counts") or {}).items() if v}
    by_kind, by_kind_before = metrics.get(names.EXACT_MATCH_BY_TAG) or {}, \
        metrics.get(names.before(names.EXACT_MATCH_BY_TAG)) or {}
    rows = [
        *((name, num(metrics.get(name))) for name in optimized),
        ("eval loss first -> last",
         f"{num(metrics.get(names.FIRST_EVAL_LOSS))} -> {num(metrics.get(names.EVAL_LOSS))}"),
        ("exact match before -> after", before_after(names.EXACT_MATCH)),
        *((f"  {kind}", f"{num(by_kind_before.get(kind), '.2f')} -> {num(value, '.2f')}")
          for kind, value in by_kind.items()),
        ("JSON validity before -> after", before_after(names.JSON_VALIDITY)),
        *((f"{name} before -> after", before_after(name, ".4f")) for name in metrics
          if name.startswith(names.BENCH_PREFIX)),
    ]
    if metrics.get(names.COLLAPSED_ANSWERS):
        rows.append(("COLLAPSED ANSWERS", f"{metrics[names.DISTINCT_ANSWERS]} distinct answers to "
                                          f"{metrics[names.DISTINCT_REFERENCES]} references "
                                          f"({metrics[names.TOP_ANSWER_SHARE]:.0%} are {metrics[names.TOP_ANSWER]!r})"))
    if names.FORGETTING_DELTA in metrics:
        rows.append(("forgetting (general ppl)", f"{before_after(names.GENERAL_PERPLEXITY, '.3f')} "
                                                 f"({num(metrics[names.FORGETTING_DELTA], '+.3f')})"
                                                 f"{FORGETTING_CAVEAT if metrics.get(names.RANDOM_INIT) else ''}"))
    rows += [
        ("steps, time", f"{metrics[names.GLOBAL_STEP]}, {duration(metrics[names.TRAIN_RUNTIME])}"),
        ("tokens/s", f"{metrics[names.TOKENS_PER_S]:,.0f}" if metrics[names.TOKENS_PER_S] else "-"),
        ("peak memory", ", ".join(f"{k.removesuffix('_mib')} {v:,.0f} MiB"
                                  for k, v in (metrics.get(names.PEAK_MEMORY) or {}).items())),
        ("monitor events", ", ".join(f"{k} {v}" for k, v in events.items()) + (
            f", rollbacks {len(monitor['rollbacks'])}" if monitor.get("rollbacks") else "") or "none"),
    ]
    if oom := metrics.get(names.OOM):
        rows.append(("out of memory", f"{oom['retries']} retries, micro-batch {oom['micro_batch']} "
                                      f"(effective batch {oom['effective_batch']})"))
    width = max(len(k) for k, _ in rows)
    lines = ["", "run summary", *[f"  {k:<{width}}  {v}" for k, v in rows], ""]
    lines += [f"  {name:<10} {command}" for name, command in commands.items() if command]
    return "\n".join(lines)


# A random-init base (the tiny model) knows no general chat: its "before" perplexity is chance level, and any
# language learnt from the task data moves it; the delta says nothing about forgetting then.
FORGETTING_CAVEAT = " (random-init base: not a forgetting measure)"
