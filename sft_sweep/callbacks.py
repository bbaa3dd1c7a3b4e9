"""Trainer callbacks of our own (beside monitor.py, tune_report.py and logger.py's), and the one
event sft-sweep adds to transformers' TrainerCallback events: `on_record`, fired by the recipe once
the run's records (weights, metrics.json) are written -- the moment the W&B summary can be final
and an ASHA trial can make its last report (ASHA may kill the process right after it).
"""

from pathlib import Path

from transformers import TrainerCallback


class RecordCallback(TrainerCallback):
    def on_record(self, metrics: dict, evaluation=None) -> None:
        """`metrics`: what metrics.json holds; `evaluation`: the run's Evaluation (answers, probes)."""


def fire_on_record(trainer, metrics: dict, evaluation=None) -> None:
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, RecordCallback):
            callback.on_record(metrics, evaluation)


class CheckpointsReadme(TrainerCallback):
    """TRL writes a model card into the checkpoints folder at every save; for a base model loaded
    from a local folder (the tiny model's base_model/, a local copy of a hub model) it names the base
    "[None](https://huggingface.co/None)". Rewrite it to say what the checkpoints are."""

    def __init__(self, base_model: str, command: str | None):
        self.base_model, self.command = base_model, command

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        readme = Path(args.output_dir) / "README.md"
        readme.write_text(
            f"# Checkpoints of the sft-sweep run `{Path(args.output_dir).parent.name}`\n\n"
            f"Trainer checkpoints (weights, optimizer, scheduler, RNG state) saved every {args.save_steps} steps "
            f"while fine-tuning `{self.base_model}` with TRL's SFTTrainer. The run's config, command, metrics and "
            f"final weights are in the run dir above this folder.\n"
            + (f"\nRun again with:\n\n    {self.command}\n" if self.command else ""), encoding="utf-8")
