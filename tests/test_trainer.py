"""OOM fallback on a real run: torch.OutOfMemoryError injected from a forward hook for the first calls; the run
finishes with the same effective batch, the same losses (up to float rounding) and a record of what happened."""


import pytest
import torch

from sft_sweep import recipe
from sft_sweep.trainer import split
from tests.helpers import TINY, losses, read, run_cli

pytestmark = pytest.mark.slow
RUN = [*TINY, "trainer.max_steps=4", "trainer.logging_steps=1", "trainer.eval_steps=4", "eval.enabled=false",
       "monitor.enabled=false"]

def test_split_keeps_every_row_once():
    inputs = {"input_ids": torch.arange(10).view(5, 2), "labels": torch.arange(10).view(5, 2), "flag": True}
    pieces = split(inputs, 4)
    assert [p["input_ids"].shape[0] for p in pieces] == [1, 1, 2, 1]
    assert torch.equal(torch.cat([p["input_ids"] for p in pieces]), inputs["input_ids"]) and pieces[0]["flag"]


def test_out_of_memory_is_retried_in_half_micro_batches_with_the_same_effective_batch(tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    assert run_cli(f"hydra.run.dir={reference}", *RUN) == 0

    # The first two forward passes of a training batch of more than 2 rows run out of memory.
    calls = {"oom": 0}

    def hook(module, args, kwargs):
        rows = kwargs["input_ids"].shape[0]
        if module.training and rows > 2 and calls["oom"] < 2:
            calls["oom"] += 1
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    build = recipe.add_lora

    def add_lora_with_hook(model, cfg):
        model = build(model, cfg)
        model.register_forward_pre_hook(hook, with_kwargs=True)
        return model

    monkeypatch.setattr(recipe, "add_lora", add_lora_with_hook)
    run_dir = tmp_path / "oom"
    assert run_cli(f"hydra.run.dir={run_dir}", *RUN) == 0
    metrics = read(run_dir / "metrics.json")
    assert metrics["oom"]["retries"] == 2 and metrics["oom"]["micro_batch"] == 2
    assert metrics["oom"]["effective_batch"] == 8 and [e["pieces"] for e in metrics["oom"]["events"]] == [2, 4]
    assert metrics["global_step"] == 4
    (steps, ours), (reference_steps, theirs) = zip(*losses(run_dir)), zip(*losses(reference))
    assert steps == reference_steps and ours == pytest.approx(theirs, rel=1e-4)  # the same steps, computed in pieces
    assert "OUT OF MEMORY at step 1: retrying with micro-batches of 2" in (run_dir / "train.log").read_text()
