"""One supervised fine-tuning run, top to bottom: setup -> train -> record -> cleanup.

`python -m sft_sweep` (sft_sweep/__main__.py) composes conf/ with Hydra and calls `run(cfg)` in
the run dir Hydra made; sweepers call it once per trial. Everything is built explicitly from the
config groups and handed to TRL's SFTTrainer; callbacks watch the training (monitor.py), report
to an ASHA sweep (tune_report.py) and to W&B (logger.py).
"""

import logging

from omegaconf import DictConfig
from transformers import set_seed

from sft_sweep import bench, checks, config, console, dist, logger, packing, report, sizing
from sft_sweep import metric_names as names
from sft_sweep.callbacks import CheckpointRecords, ConsoleProgress
from sft_sweep.data import RunData, build_datasets
from sft_sweep.environment import in_sweep, pasteable_command, peak_memory_mib
from sft_sweep.errors import RunDiverged, TrialPruned, UserError
from sft_sweep.evaluation import Evaluation
from sft_sweep.model import add_lora, base_model_path, build_model, build_tokenizer, resolve_attn_implementation
from sft_sweep.monitor import TrainingMonitor
from sft_sweep.optuna_trial import OptunaReporter
from sft_sweep.preemption import GracefulStop, disk_full_is_an_error, resume_point
from sft_sweep.run_dir import RunDir
from sft_sweep.sft_config import build_sft_config
from sft_sweep.status import Status
from sft_sweep.trainer import Trainer
from sft_sweep.tune_report import TuneReporter, in_tune_trial

log = logging.getLogger("sft_sweep")


def run(cfg: DictConfig) -> float:
    """One run in Hydra's run dir; returns `cfg.optimized_metric` (what a sweeper optimizes)."""
    run_dir = RunDir.current()
    c = config.plain(cfg)
    run_dir.start(c)
    wandb_run = None
    # SIGTERM / Ctrl-C from here on: a checkpoint where training can make one, status interrupted, exit 75.
    with GracefulStop() as stop:
        try:
            with disk_full_is_an_error(run_dir.checkpoints):  # no space left anywhere: one line, half checkpoints gone
                # --- setup -------------------------------------------------------------------------
                checks.validate(c)  # one-line errors before any heavy work
                bench.check(c["eval"]["benchmarks"] if c["eval"]["enabled"] else [], c["data"]["cache_dir"])
                set_seed(c["seed"])  # before anything random: model init, LoRA init, data order
                wandb_run = logger.start(c["logger"], run_dir, c)
                trainer, data = setup(c, run_dir, wandb_run, stop)
                # a sweep trial resumes from its own dir only (its sweeper launches an interrupted trial again
                # there): another trial of the same parameters is another trial, not this run again
                checkpoint = resume_point(run_dir, c["trainer"]["resume_from_checkpoint"],
                                          None if in_sweep() else pasteable_command(), data.fingerprint)
                evaluation = Evaluation({**c["eval"], "enabled": c["eval"]["enabled"] and dist.is_main_process()},
                                        trainer, data.validation_rows, c["data"]["cache_dir"])
                stop.phase = "the evaluation before training"
                evaluation.before()  # the base model's answers and probes, for the before/after comparison
                # --- train -------------------------------------------------------------------------
                train_output = trainer.fit(checkpoint)
                # --- record ------------------------------------------------------------------------
                stop.phase = "the end-of-run evaluation"
                metrics = record(c, trainer, train_output, evaluation, run_dir, wandb_run)
            return optimized(c, metrics)
        except BaseException as exc:
            run_dir.fail(exc)  # the error goes to train.log and the manifest (status failed/interrupted/...)
            raise
        finally:
            # --- cleanup: multirun jobs share this process, so always close the W&B run -------------
            logger.finish(wandb_run)


def setup(c: dict, run_dir: RunDir, wandb_run=None, stop: GracefulStop | None = None) -> tuple[Trainer, RunData]:
    """tokenizer -> data -> model + LoRA -> SFTConfig -> Trainer and the callbacks that watch it.
    Returns the trainer and the run's data (its validation rows: chat rows, for answer-level evaluation)."""
    tokenizer = build_tokenizer(c["model"])
    # Data before the model: a bad row fails in a second, not after loading 8B weights.
    data = build_datasets(c["data"], tokenizer, c["trainer"]["max_length"], c["trainer"]["packing"])
    # trainer=auto_by_size: epochs and lr from the data's size. The manifest's config is what trains, and says what
    # was set at run time over the composed config (.hydra/config.yaml: reproduce derives them again)
    if applied := sizing.apply(c, len(data.train)):
        for key, value in applied.items():
            log.info("auto_by_size: %s=%g (composed: %g; %s)", key, value["trained"], value["composed"], value["why"])
        run_dir.update(config=c, set_at_run_time=applied)
    base = base_model_path(c["model"], tokenizer, run_dir.base_model)
    model = add_lora(build_model(c["model"], c["lora"], base), c["lora"])
    attn = resolve_attn_implementation(c["model"]["attn_implementation"])
    train_data, collator, trainer_cfg = packing.plan(data.train, c["trainer"], attn, tokenizer.pad_token_id)
    if data.eval is None:  # every row trains (data.val_ratio=0 data.min_val_size=0): no evaluation
        trainer_cfg = {**trainer_cfg, "eval_strategy": "no", "eval_on_start": False}
    args = build_sft_config(c["optim"], trainer_cfg, output_dir=str(run_dir.checkpoints), seed=c["seed"],
                            report_to=["wandb"] if wandb_run else [], run_name=run_dir.path.name)
    # What watches the training: the console's progress, signals (checkpoint, then exit 75), the checkpoints'
    # README, the monitor (its skip action and rollbacks are the trainer's), a sweep's reporter.
    stop = stop or GracefulStop()
    monitor = TrainingMonitor(c["monitor"], run_dir.monitor_events, run_dir.checkpoints) if c["monitor"][
        "enabled"] else None
    # an ASHA sweep: report each evaluation; an Optuna sweep: the same, to the trial's pruner
    reporter = TuneReporter() if in_tune_trial() else OptunaReporter.for_this_job(
        c["optimized_metric"])
    callbacks = [stop, CheckpointRecords(base, pasteable_command(), data.fingerprint),
                 *(cb for cb in (monitor, reporter) if cb)]
    trainer = Trainer(model=model, args=args, train_dataset=train_data, eval_dataset=data.eval,
                      data_collator=collator, processing_class=tokenizer, callbacks=callbacks,
                      monitor=monitor, stop=stop, reporter=reporter, on_oom=c["trainer"]["on_oom"])
    ConsoleProgress.install(trainer)  # a progress bar / compact lines instead of raw dicts
    run_dir.update(data_fingerprint=data.fingerprint)
    return trainer, data


def final_evaluation(trainer: Trainer) -> dict:
    """The eval metrics at the last step: reused when the schedule already evaluated there ({}: no eval set)."""
    if trainer.eval_dataset is None:
        return {}
    last = [h for h in trainer.state.log_history if names.EVAL_LOSS in h]
    if last and last[-1]["step"] == trainer.state.global_step:
        return {k: v for k, v in last[-1].items() if k.startswith("eval_")}
    return trainer.evaluate()


def record(c: dict, trainer: Trainer, train_output: dict, evaluation: Evaluation, run_dir: RunDir,
           wandb_run=None) -> dict:
    """Weights, evaluation and metrics into the run dir (metrics.json last: the run is completed), then
    the W&B summary and an ASHA trial's last report (ASHA may end the process right after it)."""
    final_eval = final_evaluation(trainer)
    weights = run_dir.weights(lora=bool(c["lora"]))
    trainer.save_model(str(weights))  # the adapter only, for LoRA (rank 0 writes it under DDP)
    if dist.is_main_process():
        trainer.processing_class.save_pretrained(str(weights))
        if c["lora"] and c["model"]["config"]:  # a base built into the run dir: named relative to the adapter
            run_dir.name_base_relative_to_adapter()
    metrics = {**training_metrics(trainer, train_output), names.RANDOM_INIT: bool(c["model"]["config"])}
    # A pruned trial stops at once: its curve and records, not the answer-level evaluation.
    metrics.update({**final_eval, **({} if metrics[names.PRUNED_AT_STEP] else evaluation.after(run_dir))})
    wanted = names.objectives(c["optimized_metric"])
    if trainer.eval_dataset is not None and (missing := [m for m in wanted if m not in metrics]):
        raise UserError(f"optimized_metric={missing[0]!r} is not among the run's metrics: "
                        f"{sorted(k for k, v in metrics.items() if isinstance(v, float))}")
    if dist.is_main_process():
        status = (Status.DIVERGED if metrics[names.DIVERGED] else Status.PRUNED if metrics[names.PRUNED_AT_STEP]
                  else Status.COMPLETED)
        run_dir.write_records(trainer.state.log_history, metrics, status)
        report.refresh(run_dir.path)  # report.html: curves, events, probes, answers
        logger.record(wandb_run, metrics, evaluation)
        if isinstance(trainer.reporter, TuneReporter):
            trainer.reporter.final(metrics)
    if metrics[names.DIVERGED]:
        raise RunDiverged(f"training diverged (stopped at step {metrics[names.GLOBAL_STEP]}); "
                          f"see {run_dir.monitor_events}")
    if metrics[names.PRUNED_AT_STEP]:
        raise TrialPruned(f"pruned at step {metrics[names.PRUNED_AT_STEP]} "
                          f"({c['optimized_metric']}={metrics[c['optimized_metric']]:.4f})")
    if dist.is_main_process():
        log.info("%s", console.summary(metrics, run_dir.commands(), wanted))
    return metrics


def optimized(c: dict, metrics: dict):
    """What the run returns to Hydra and a sweeper: `optimized_metric`'s value, or one value per name when it is a
    list (a multi-objective sweep); None without an evaluation set."""
    wanted = c["optimized_metric"]
    return metrics.get(wanted) if isinstance(wanted, str) else [metrics.get(m) for m in wanted]


def training_metrics(trainer: Trainer, train_output: dict) -> dict:
    history, state, monitor = trainer.state.log_history, trainer.state, trainer.monitor
    losses = [h["loss"] for h in history if "loss" in h]
    evals = [h[names.EVAL_LOSS] for h in history if names.EVAL_LOSS in h]
    return {
        names.TRAIN_LOSS_MEAN: train_output["train_loss"],  # the trainer's: mean over the run's steps
        names.TRAIN_LOSS_LAST: losses[-1] if losses else None,  # the last logged value
        names.FIRST_EVAL_LOSS: evals[0] if evals else None,
        names.GLOBAL_STEP: state.global_step,
        names.TRAIN_RUNTIME: train_output["train_runtime"],
        names.TRAIN_TOKENS: state.num_input_tokens_seen,
        names.TOKENS_PER_S: (state.num_input_tokens_seen / train_output["train_runtime"]
                             if train_output["train_runtime"] else None),  # None: resumed at its last step
        names.PEAK_MEMORY: peak_memory_mib(),
        names.TRAINABLE_PARAMS: sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        names.DIVERGED: bool(monitor and monitor.state.diverged),
        names.PRUNED_AT_STEP: trainer.reporter.pruned_at if isinstance(trainer.reporter, OptunaReporter) else None,
        names.MONITOR: monitor.summary() if monitor else None,
        names.OOM: trainer.oom_summary(),
    }
