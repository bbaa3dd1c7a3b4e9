"""The one event sft-sweep adds to transformers' TrainerCallback events: `on_record`, fired by the
recipe once the run's records (weights, metrics.json) are written -- the moment the W&B summary
can be final and an ASHA trial can make its last report (ASHA may kill the process right after it).
"""

from transformers import TrainerCallback


class RecordCallback(TrainerCallback):
    def on_record(self, metrics: dict, evaluation=None) -> None:
        """`metrics`: what metrics.json holds; `evaluation`: the run's Evaluation (answers, probes)."""


def fire_on_record(trainer, metrics: dict, evaluation=None) -> None:
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, RecordCallback):
            callback.on_record(metrics, evaluation)
