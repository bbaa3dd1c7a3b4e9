"""One supervised fine-tuning run, top to bottom: setup -> train -> record -> cleanup.

`python -m sft_sweep` (sft_sweep/__main__.py) composes conf/ with Hydra and calls `run(cfg)` in
the run dir Hydra made; sweepers call it once per trial. Everything is built explicitly from the
config groups and handed to TRL's SFTTrainer; callbacks watch the training (monitor.py), report
to an ASHA sweep (tune_report.py) and to W&B (logger.py).
"""

import logging

from omegaconf import DictConfig
from transformers import set_seed
from trl import SFTTrainer

from sft_sweep import config, console, dist, logger, packing, report, sizing
from sft_sweep.callbacks import CheckpointsReadme, fire_on_record
from sft_sweep.data import build_datasets
from sft_sweep.errors import RunDiverged, TrialPruned, UserError
from sft_sweep.evaluation import Evaluation
from sft_sweep.model import add_lora, base_model_path, build_model, build_tokenizer, resolve_attn_implementation
from sft_sweep.monitor import TrainingMonitor
from sft_sweep.oom import OomFallback
from sft_sweep.optuna_trial import OptunaReporter, current_trial
from sft_sweep.preemption import GracefulStop, disk_full_is_an_error, resume_point
from sft_sweep.run_dir import RunDir, checkpoint_step, pasteable_command, peak_memory_mib
from sft_sweep.sft_config import build_sft_config
from sft_sweep.skip_step import SkipStep
from sft_sweep.tune_report import TuneReporter, in_tune_trial

log = logging.getLogger("sft_sweep")


def run(cfg: DictConfig) -> float:
    """One run in Hydra's run dir; returns `cfg.optimized_metric` (what a sweeper optimizes)."""
    run_dir = RunDir.current()
    c = config.plain(cfg)
    run_dir.start(c)
    wandb_run = None
    try:
        # --- setup ---------------------------------------------------------------------------------
        config.validate(c)  # one-line errors before any heavy work
        set_seed(c["seed"])  # before anything random: model init, LoRA init, data order
        wandb_run = logger.start(c["logger"], run_dir, c)
        trainer, validation_rows = setup(c, run_dir, wandb_run)
        checkpoint = resume_point(run_dir, c["trainer"]["resume_from_checkpoint"], pasteable_command())
        evaluation = Evaluation({**c["eval"], "enabled": c["eval"]["enabled"] and dist.is_main_process()},
                                trainer, validation_rows)
        evaluation.before()  # the base model's answers and probes, for the before/after comparison
        # --- train ---------------------------------------------------------------------------------
        train_output = train(trainer, checkpoint)
        # --- record --------------------------------------------------------------------------------
        metrics = record(c, trainer, train_output, evaluation, run_dir)
        return metrics[c["optimized_metric"]]
    except BaseException as exc:
        run_dir.fail(exc)  # the error goes to train.log and the manifest (status failed/diverged)
        raise
    finally:
        # --- cleanup: multirun jobs share this process, so always close the W&B run -----------------
        logger.finish(wandb_run)


def setup(c: dict, run_dir: RunDir, wandb_run=None) -> tuple[SFTTrainer, list[dict]]:
    """tokenizer -> data -> model + LoRA -> SFTConfig -> SFTTrainer and its callbacks.
    Returns the trainer and the validation rows (chat rows, for answer-level evaluation)."""
    tokenizer = build_tokenizer(c["model"])
    # Data before the model: a bad row fails in a second, not after loading 8B weights.
    data = build_datasets(c["data"], tokenizer, c["trainer"]["max_length"], c["trainer"]["packing"])
    for setting in sizing.apply(c, len(data.train)):  # trainer=auto_by_size: epochs and lr from the data's size
        log.info("auto_by_size: %s (%d training rows)", setting, len(data.train))
    base = base_model_path(c["model"], tokenizer, run_dir.base_model)
    model = add_lora(build_model(c["model"], c["lora"], base), c["lora"])
    attn = resolve_attn_implementation(c["model"]["attn_implementation"])
    train_data, collator, trainer_cfg = packing.plan(data.train, c["trainer"], attn, tokenizer.pad_token_id)
    args = build_sft_config(c["optim"], trainer_cfg, output_dir=str(run_dir.checkpoints), seed=c["seed"],
                            report_to=["wandb"] if wandb_run else [], run_name=run_dir.path.name)
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_data, eval_dataset=data.eval,
                         data_collator=collator, processing_class=tokenizer)
    console.ConsoleProgress.install(trainer)  # a progress bar / compact lines instead of raw dicts
    trainer.add_callback(GracefulStop())  # SIGTERM/SIGINT: checkpoint at the step's end, then exit 75
    OomFallback.install(trainer, c["trainer"]["on_oom"])
    trainer.add_callback(CheckpointsReadme(base, pasteable_command()))
    if c["monitor"]["enabled"]:
        trainer.add_callback(TrainingMonitor(c["monitor"], run_dir.monitor_events, run_dir.checkpoints))
    SkipStep.install(trainer, c["monitor"])  # monitor.actions.*=skip: outlier steps are not applied
    if in_tune_trial():  # an ASHA sweep: report each evaluation so weak trials stop early
        trainer.add_callback(TuneReporter(run_dir.tune_progress))
    if trial := current_trial(c["optimized_metric"]):  # an Optuna sweep: the same, to the trial's pruner
        trainer.add_callback(OptunaReporter(trial, c["optimized_metric"]))
    if wandb_run is not None:
        trainer.add_callback(logger.WandbRecords(wandb_run))
    return trainer, data.validation_rows


def train(trainer: SFTTrainer, checkpoint=None) -> dict:
    """trainer.train() (from `checkpoint` when resuming), resumed from the last good checkpoint after each
    monitor rollback; a signal ends it with a checkpoint (RunInterrupted). Returns the last segment's
    TrainOutput metrics, with the runtime summed over all segments."""
    monitor, stop = TrainingMonitor.of(trainer), GracefulStop.of(trainer)
    if checkpoint is not None:
        log.info("resuming from %s (step %d)", checkpoint, checkpoint_step(checkpoint))
    with disk_full_is_an_error(trainer.args.output_dir):
        output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    runtime = output.metrics["train_runtime"]
    stop.raise_if_stopped(trainer.state, trainer.args.output_dir)
    while monitor is not None and (checkpoint := monitor.prepare_rollback()):
        with disk_full_is_an_error(trainer.args.output_dir):
            output = trainer.train(resume_from_checkpoint=checkpoint)
        runtime += output.metrics["train_runtime"]
        stop.raise_if_stopped(trainer.state, trainer.args.output_dir)
    return {**output.metrics, "train_runtime": runtime}


def final_evaluation(trainer: SFTTrainer) -> dict:
    """The eval metrics at the last step: reused when the schedule already evaluated there."""
    last = [h for h in trainer.state.log_history if "eval_loss" in h]
    if last and last[-1]["step"] == trainer.state.global_step:
        return {k: v for k, v in last[-1].items() if k.startswith("eval_")}
    return trainer.evaluate()


def record(c: dict, trainer: SFTTrainer, train_output: dict, evaluation: Evaluation, run_dir: RunDir) -> dict:
    """Weights, evaluation and metrics into the run dir (metrics.json last: the run is finished),
    then the record callbacks (W&B summary, the ASHA trial's last report)."""
    final_eval = final_evaluation(trainer)
    weights = run_dir.weights(lora=bool(c["lora"]))
    trainer.save_model(str(weights))  # the adapter only, for LoRA (rank 0 writes it under DDP)
    if dist.is_main_process():
        trainer.processing_class.save_pretrained(str(weights))
    metrics = training_metrics(trainer, train_output)
    # A pruned trial stops at once: its curve and records, not the answer-level evaluation.
    metrics.update({**final_eval, **({} if metrics["pruned_at_step"] else evaluation.after(run_dir))})
    if c["optimized_metric"] not in metrics:
        raise UserError(f"optimized_metric={c['optimized_metric']!r} is not among the run's metrics: "
                        f"{sorted(k for k, v in metrics.items() if isinstance(v, float))}")
    if dist.is_main_process():
        status = "diverged" if metrics["diverged"] else "pruned" if metrics["pruned_at_step"] else "finished"
        run_dir.write_records(trainer.state.log_history, metrics, status)
        report.refresh(run_dir.path)  # report.html: curves, events, probes, answers
        fire_on_record(trainer, metrics, evaluation)
    if metrics["diverged"]:
        raise RunDiverged(f"training diverged (stopped at step {metrics['global_step']}); "
                          f"see {run_dir.monitor_events}")
    if metrics["pruned_at_step"]:
        raise TrialPruned(f"pruned at step {metrics['pruned_at_step']} "
                          f"({c['optimized_metric']}={metrics[c['optimized_metric']]:.4f})")
    if dist.is_main_process():
        log.info("%s", console.summary(metrics, run_dir.commands(), c["optimized_metric"]))
    return metrics



def training_metrics(trainer: SFTTrainer, train_output: dict) -> dict:
    history, state = trainer.state.log_history, trainer.state
    losses = [h["loss"] for h in history if "loss" in h]
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    monitor = TrainingMonitor.of(trainer)
    return {
        "train_loss_mean": train_output["train_loss"],  # the trainer's: mean over the run's steps
        "train_loss_last": losses[-1] if losses else None,  # the last logged value
        "first_eval_loss": evals[0] if evals else None,
        "global_step": state.global_step,
        "train_runtime_s": train_output["train_runtime"],
        "train_tokens": state.num_input_tokens_seen,
        "train_tokens_per_s": state.num_input_tokens_seen / train_output["train_runtime"],
        "peak_memory": peak_memory_mib(),
        "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "diverged": bool(monitor and monitor.state.diverged),
        "pruned_at_step": reporter.pruned_at if (reporter := OptunaReporter.of(trainer)) else None,
        "monitor": monitor.summary() if monitor else None,
        "oom": oom.summary() if (oom := OomFallback.of(trainer)) else None,
    }
