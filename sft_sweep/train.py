"""The training entrypoint: `python -m sft_sweep [group=option ...] [key=value ...]`.

Read top to bottom: Hydra composes conf/config.yaml -> `main` -> `train`:
setup (tokenizer, data, model, SFTConfig) -> SFTTrainer.train() -> final evaluation ->
records in the run dir -> return the optimized metric (for sweepers) -> close W&B.
"""

import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from transformers import set_seed
from trl import SFTTrainer

from sft_sweep.data import build_datasets
from sft_sweep.evaluation import Evaluation
from sft_sweep.errors import RunDiverged, UserError
from sft_sweep.logger import start_wandb
from sft_sweep.monitor import TrainingMonitor
from sft_sweep.model import (build_lora_config, build_model, build_tokenizer, materialize_random_init,
                             resolve_attn_implementation)
from sft_sweep.packing import BlockDiagonalCollator, pack, uses_varlen_kernel
from sft_sweep.run_dir import METRICS, peak_memory_mib, refuse_finished, write_json, write_manifest
from sft_sweep.sft_config import build_sft_config
from sft_sweep.tune_report import TuneReporter, in_tune_trial, report

log = logging.getLogger("sft_sweep")


def is_main_process() -> bool:
    """Rank 0 under torchrun / accelerate (launch/multi_gpu.sh); always true for a single process."""
    return int(os.environ.get("RANK", "0")) == 0


def setup(c: dict, run_dir: Path) -> tuple[SFTTrainer, str]:
    """Tokenizer, data, model and SFTConfig from the plain-Python config -> a ready SFTTrainer."""
    tokenizer = build_tokenizer(c["model"])
    # Data before the model: a bad row fails in a second, not after loading 8B weights.
    train_data, eval_data = build_datasets(c["data"], tokenizer, c["trainer"]["max_length"], c["trainer"]["packing"])
    base_path = c["model"]["name_or_path"]
    if c["model"]["config"]:  # the embedded tiny model (or any random-init config)
        # Every rank builds the same seeded weights; only rank 0 keeps them in the run dir.
        target = run_dir / "base_model" if is_main_process() else Path(tempfile.mkdtemp(prefix="sft_sweep_base_"))
        base_path = str(materialize_random_init(c["model"], tokenizer, target))
    model = build_model(c["model"], c["lora"], base_path)
    trainer_cfg, collator = c["trainer"], None
    attn = resolve_attn_implementation(c["model"]["attn_implementation"])
    if trainer_cfg["packing"] and not uses_varlen_kernel(attn):
        # sdpa/eager: TRL's padding-free packing would let packed samples attend to each other;
        # pack here and give the batch an explicit block-diagonal mask instead (packing.py).
        train_data = pack(train_data, trainer_cfg["max_length"])
        collator = BlockDiagonalCollator(tokenizer.pad_token_id, attn)
        # Transformers counts "non-padding" tokens by summing the attention mask, which is now
        # L x L; packed rows are ~98% real tokens, so count every position instead.
        trainer_cfg = {**trainer_cfg, "packing": False, "include_num_input_tokens_seen": "all"}
    report_to = ["wandb"] if c["logger"] else []
    args = build_sft_config(c["optim"], trainer_cfg, output_dir=str(run_dir / "checkpoints"),
                            seed=c["seed"], report_to=report_to, run_name=run_dir.name)
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_data, eval_dataset=eval_data,
                         data_collator=collator, processing_class=tokenizer,
                         peft_config=build_lora_config(c["lora"]))
    if c["monitor"]["enabled"]:
        trainer.add_callback(TrainingMonitor(c["monitor"], run_dir, run_dir / "checkpoints"))
    if in_tune_trial():  # an ASHA sweep: report each evaluation so weak trials stop early
        trainer.add_callback(TuneReporter(run_dir))
    return trainer, base_path


def run_training(trainer: SFTTrainer) -> float:
    """trainer.train(), resumed from the last good checkpoint after each monitor rollback.
    Returns the training seconds summed over every segment."""
    monitor = TrainingMonitor.of(trainer)
    result = trainer.train()
    seconds = result.metrics["train_runtime"]
    while monitor is not None and (checkpoint := monitor.prepare_rollback()):
        result = trainer.train(resume_from_checkpoint=checkpoint)
        seconds += result.metrics["train_runtime"]
    return seconds


def final_evaluation(trainer: SFTTrainer) -> dict:
    """The eval metrics at the last step: reused when the schedule already evaluated there."""
    last = [h for h in trainer.state.log_history if "eval_loss" in h]
    if last and last[-1]["step"] == trainer.state.global_step:
        return {k: v for k, v in last[-1].items() if k.startswith("eval_")}
    return trainer.evaluate()


def train(cfg: DictConfig) -> float:
    """One SFT run in the current Hydra run dir; returns `cfg.optimized_metric`."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    refuse_finished(run_dir, cfg.overwrite)
    # PEFT and TRL check isinstance(x, list/dict): hand them plain Python, never OmegaConf nodes.
    c = OmegaConf.to_container(cfg, resolve=True)
    set_seed(c["seed"])  # before anything random: model init, LoRA init, data order
    main = is_main_process()  # under DDP only rank 0 writes records, logs to W&B and generates
    if main:
        write_manifest(run_dir, cfg, status="started")
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:  # one W&B run per trial, grouped by sweep, named by its overrides
        name, group = hydra_cfg.job.override_dirname or run_dir.name, Path(hydra_cfg.sweep.dir).name
    else:
        name, group = run_dir.name, None
    wandb_run = start_wandb(c["logger"] if main else {}, run_dir, c, default_name=name, default_group=group)
    try:
        trainer, base_path = setup(c, run_dir)
        tokenizer = trainer.processing_class

        evaluation = Evaluation({**c["eval"], "enabled": c["eval"]["enabled"] and main}, trainer, c["data"])
        evaluation.before()  # the base model's answers and probes, for the before/after comparison

        # --- train -----------------------------------------------------------------------------
        started = time.perf_counter()
        train_runtime = run_training(trainer)
        final_eval = final_evaluation(trainer)
        train_seconds = time.perf_counter() - started
        monitor = TrainingMonitor.of(trainer)

        # --- records ---------------------------------------------------------------------------
        weights_dir = run_dir / ("adapter" if c["lora"] else "model")
        trainer.save_model(str(weights_dir))  # adapter only for LoRA (rank 0 writes it under DDP)
        if main:
            tokenizer.save_pretrained(str(weights_dir))
        eval_metrics = evaluation.after(run_dir, wandb_run)
        evals = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h]
        train_losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        metrics = {
            "train_loss": train_losses[-1] if train_losses else None,  # the last logged one
            **final_eval,
            "first_eval_loss": evals[0] if evals else None,
            "global_step": trainer.state.global_step,
            "train_runtime_s": train_runtime,
            "train_and_eval_wall_s": train_seconds,
            "train_tokens": trainer.state.num_input_tokens_seen,
            "train_tokens_per_s": trainer.state.num_input_tokens_seen / train_runtime,
            "peak_memory": peak_memory_mib(),
            "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
            "weights_dir": weights_dir.name,
            "base_model": base_path,
            **eval_metrics,
            "diverged": bool(monitor and monitor.state.diverged),
            "monitor": monitor.summary() if monitor else None,
        }
        if cfg.optimized_metric not in metrics:
            raise UserError(f"optimized_metric={cfg.optimized_metric!r} is not among the run's metrics: "
                            f"{sorted(k for k, v in metrics.items() if isinstance(v, float))}")
        if not main:
            return metrics[cfg.optimized_metric]
        write_json(run_dir / "log_history.json", trainer.state.log_history)
        write_manifest(run_dir, cfg, status="finished")
        write_json(run_dir / METRICS, metrics)  # written last: marks the run finished
        if in_tune_trial() and not metrics["diverged"]:
            report(final_eval, metrics["global_step"], run_dir)
        if wandb_run:
            wandb_run.summary.update({f"final/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
            if monitor:
                wandb_run.summary.update({f"monitor/{k}": v for k, v in monitor.state.counts.items()})
                wandb_run.summary["monitor/rollbacks"] = len(monitor.state.rollbacks)
        if metrics["diverged"]:
            raise RunDiverged(f"training diverged (stopped at step {metrics['global_step']}); "
                              f"see {run_dir / 'monitor_events.jsonl'}")
        log.info("finished: %s=%.4f (first eval %.4f), %d steps, %.0f tokens/s -> %s",
                 cfg.optimized_metric, metrics[cfg.optimized_metric], metrics["first_eval_loss"] or float("nan"),
                 metrics["global_step"], metrics["train_tokens_per_s"], run_dir)
        return metrics[cfg.optimized_metric]
    finally:
        # Multirun jobs share this process: always close the W&B run, even on failure.
        if wandb_run is not None:
            wandb_run.finish()


# conf/ sits beside the package; an absolute path works under `python -m` too.
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def hydra_main(cfg: DictConfig) -> float:
    try:
        return train(cfg)
    except UserError as exc:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the sweeper records the failed trial and goes on
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))


def prepare_argv(argv: list[str]) -> list[str]:
    """Make `--config-path`/`-cp` relative to the current dir (Hydra would read it relative to
    the package under `python -m`); give a run's saved config (`<run>/.hydra`, which has no
    defaults list) our hydra settings, so a reproduction lands in outputs/runs/ like any run;
    and refuse an explicit `hydra.run.dir=` that holds a finished run before Hydra writes its
    .hydra/ files there."""
    argv = list(argv)
    config_path = None
    for i, arg in enumerate(argv[:-1]):
        if arg in ("--config-path", "-cp"):
            argv[i + 1] = config_path = str(Path(argv[i + 1]).resolve())
    for i, arg in enumerate(argv):
        if arg.startswith("--config-path="):
            config_path = str(Path(arg.split("=", 1)[1]).resolve())
            argv[i] = "--config-path=" + config_path
    if config_path and (Path(config_path) / "hydra.yaml").is_file():
        argv = with_our_hydra_settings(argv)
    if "-m" not in argv and "--multirun" not in argv and "overwrite=true" not in argv:
        for arg in argv:
            if arg.startswith("hydra.run.dir="):
                try:
                    refuse_finished(Path(arg.split("=", 1)[1]), overwrite=False)
                except UserError as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    sys.exit(2)
    return argv


def with_our_hydra_settings(argv: list[str]) -> list[str]:
    """argv + `--config-dir conf/ +hydra=default`, overrides kept contiguous (argparse needs that)."""
    from hydra._internal.utils import get_args_parser

    overrides = get_args_parser().parse_args(argv[1:]).overrides
    options = list(argv[1:])
    for override in overrides:
        options.remove(override)
    return [argv[0], *options, "--config-dir", CONF_DIR, *overrides, "+hydra=default"]


def main() -> None:
    sys.argv = prepare_argv(sys.argv)
    hydra_main()
