"""Every line of W&B code: open a run from the `logger` group (or nothing), alerts for the monitor,
the run's final summary and evaluation tables (once the records are written), and the sweep's
summary run.

Offline unless an API key is configured (sync later with `wandb sync`). Only rank 0 logs.
"""

import logging
import netrc
import os
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from sft_sweep import bench, dist
from sft_sweep import metric_names as names
from sft_sweep.environment import in_sweep
from sft_sweep.run_dir import RunDir

log = logging.getLogger(__name__)


def wandb_api_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def start(logger_cfg: dict, run_dir: RunDir, config: dict, name: str | None = None, group: str | None = None):
    """Open the W&B run (None with logger=none, and on ranks other than 0).
    By default a sweep trial's run is named by its overrides and grouped by its sweep."""
    if not logger_cfg or "project" not in logger_cfg or not dist.is_main_process():
        return None
    import wandb

    if name is None:
        name, group = _trial_name_and_group(run_dir)
    mode = logger_cfg.get("mode") or os.environ.get("WANDB_MODE")
    if mode is None:
        mode = "online" if wandb_api_key_configured() else "offline"
        if mode == "offline":
            log.info("wandb: no API key configured, logging offline to %s (sync later with `wandb sync`)", run_dir.path)
    return wandb.init(
        project=logger_cfg["project"],
        entity=logger_cfg.get("entity"),
        group=logger_cfg.get("group") or group,
        name=logger_cfg.get("name") or name,
        tags=list(logger_cfg.get("tags") or []),
        mode=mode,
        dir=os.environ.get("WANDB_DIR", str(run_dir.path)),
        config=config,
        reinit="finish_previous",
    )


def _trial_name_and_group(run_dir: RunDir) -> tuple[str, str | None]:
    from hydra.core.hydra_config import HydraConfig

    if in_sweep():
        hc = HydraConfig.get()
        return hc.job.override_dirname or run_dir.path.name, Path(hc.sweep.dir).name
    return run_dir.path.name, None


def finish(run) -> None:
    if run is not None:
        run.finish()


def alert(title: str, text: str, level: str, metrics: dict) -> None:
    """A W&B alert plus metrics on the active run, if there is one (the training monitor's events)."""
    import sys

    if "wandb" not in sys.modules:  # never import W&B (seconds) for a run that does not use it
        return
    import wandb

    if wandb.run is not None:
        wandb.alert(title=title, text=text, level=getattr(wandb.AlertLevel, level))
        wandb.run.log(metrics, commit=False)


def record(run, metrics: dict, evaluation=None) -> None:
    """At the end of the run: the final metrics under their metrics.json names and the monitor counters in
    the W&B summary, and the evaluation's scored answers and probes as W&B tables. Nothing without a run."""
    if run is None:
        return
    import wandb

    run.summary.update({k: v for k, v in metrics.items() if isinstance(v, (int, float))
                        or k in (names.EXACT_MATCH_BY_TAG, names.before(names.EXACT_MATCH_BY_TAG))})
    monitor = metrics.get(names.MONITOR)
    if monitor:
        run.summary.update({f"monitor/{k}": v for k, v in monitor["counts"].items()})
        run.summary["monitor/rollbacks"] = len(monitor["rollbacks"])
    if metrics.get(names.OOM):  # out-of-memory retries (trainer.py): how many, and the micro-batch it ended with
        run.summary.update({"oom/retries": metrics[names.OOM]["retries"],
                            "oom/micro_batch": metrics[names.OOM]["micro_batch"]})
    if evaluation is not None and evaluation.samples is not None:
        columns = ["id", "kind", "prompt", "reference", "prediction", "ended", *names.SAMPLE_SCORES]
        run.log({"eval/samples": wandb.Table(columns=columns, data=[[s.get(c) for c in columns]
                                                                   for s in evaluation.samples]),
                 "eval/probes": wandb.Table(columns=["probe", "before", "after"], data=evaluation.probe_table())})
    if evaluation is not None and evaluation.benchmark_records is not None:
        run.log({"eval/benchmarks": wandb.Table(columns=bench.TABLE_COLUMNS,
                                                data=bench.table(evaluation.benchmark_records))})


class SweepSummary(Callback):
    """Hydra callback of the sweep presets (hparams_search/*.yaml): when a sweep ends, its W&B summary run."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from sft_sweep.run_dir import SweepDir

        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        if SweepDir(sweep_dir).results.is_file():
            log_sweep_summary(OmegaConf.to_container(config.logger, resolve=True), sweep_dir)


def log_sweep_summary(logger_cfg: dict, sweep_dir: Path) -> None:
    """One W&B run in the sweep's group (beside its trials' runs) whose summary holds the sweep's
    best value, trial and params (its optimization_results.yaml). Nothing without logger=wandb."""
    import yaml

    from sft_sweep.run_dir import SweepDir

    results = yaml.safe_load(SweepDir(sweep_dir).results.read_text(encoding="utf-8"))
    if not logger_cfg or "project" not in logger_cfg or "best_value" not in results:
        return
    run = start({**logger_cfg, "name": None, "tags": [*(logger_cfg.get("tags") or []), "sweep-summary"]},
                RunDir(sweep_dir), {"sweep": results}, name=f"{sweep_dir.name}-summary", group=sweep_dir.name)
    try:
        run.summary.update({"best_value": results["best_value"], "best_trial": results["best_trial"],
                            **{f"best_params/{k}": v for k, v in results["best_params"].items()},
                            **{f"trials/{k}": v for k, v in results["trials"].items()}})
    finally:
        run.finish()
