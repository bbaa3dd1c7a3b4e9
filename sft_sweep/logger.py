"""Experiment tracking: a W&B run opened from the `logger` group, or nothing."""

import logging
import netrc
import os
from pathlib import Path

log = logging.getLogger(__name__)


def wandb_api_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def start_wandb(logger_cfg: dict, run_dir: Path, config: dict, default_name: str, default_group: str | None = None):
    """Open the W&B run (None with logger=none); offline unless an API key is configured."""
    if not logger_cfg or "project" not in logger_cfg:
        return None
    import wandb

    mode = logger_cfg.get("mode") or os.environ.get("WANDB_MODE")
    if mode is None:
        mode = "online" if wandb_api_key_configured() else "offline"
        if mode == "offline":
            log.info("wandb: no API key configured, logging offline to %s (sync later with `wandb sync`)", run_dir)
    return wandb.init(
        project=logger_cfg["project"],
        entity=logger_cfg.get("entity"),
        group=logger_cfg.get("group") or default_group,
        name=logger_cfg.get("name") or default_name,
        tags=list(logger_cfg.get("tags") or []),
        mode=mode,
        dir=os.environ.get("WANDB_DIR", str(run_dir)),
        config=config,
        reinit="finish_previous",
    )


def log_sweep_summary(logger_cfg: dict, sweep_dir: Path, results: dict) -> None:
    """One W&B run in the sweep's group (beside its trials' runs) whose summary holds the sweep's
    best value, trial and params. Nothing without logger=wandb."""
    if not logger_cfg or "project" not in logger_cfg:
        return
    run = start_wandb({**logger_cfg, "name": None, "tags": [*(logger_cfg.get("tags") or []), "sweep-summary"]},
                      sweep_dir, {"sweep": results}, default_name=f"{sweep_dir.name}-summary",
                      default_group=sweep_dir.name)
    try:
        run.summary.update({"best_value": results["best_value"], "best_trial": results["best_trial"],
                            **{f"best_params/{k}": v for k, v in results["best_params"].items()},
                            **{f"trials/{k}": v for k, v in results["trials"].items()}})
    finally:
        run.finish()
