"""Padding and throughput with and without packing, on the bundled sample data.

    python -m sft_sweep.benchmarks.packing [--steps 60]

For each setting: the padding fraction over every training batch of one epoch (padding
positions / all positions), then `--steps` real training steps of the tiny model, reporting
real (non-padding) tokens per second.
"""

import argparse
import tempfile
import time
from pathlib import Path

from sft_sweep import config
from sft_sweep.recipe import setup
from sft_sweep.run_dir import RunDir


def measure(packing: bool, steps: int, tmp: str) -> dict:
    cfg = config.compose([f"trainer.packing={str(packing).lower()}", f"trainer.max_steps={steps}",
                          "trainer.eval_strategy=no", "trainer.eval_on_start=false", "trainer.save_strategy=no",
                          f"data.cache_dir={tmp}/cache"])
    trainer, _ = setup(config.plain(cfg), RunDir(Path(tmp) / f"packing_{packing}"))
    pad_id = trainer.processing_class.pad_token_id
    real = total = 0
    for batch in trainer.get_train_dataloader():
        total += batch["input_ids"].numel()
        if "seq_lengths" in trainer.train_dataset.column_names:
            own_position = batch["attention_mask"][:, 0].diagonal(dim1=-2, dim2=-1)
            real += int((own_position & (batch["input_ids"] != pad_id)).sum())
        else:
            real += int(batch["attention_mask"].sum())
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    padding = 1 - real / total
    # Packed runs count every position (see packing.plan); take the padding share back out.
    seen = trainer.state.num_input_tokens_seen * ((1 - padding) if packing else 1)
    return {"rows": len(trainer.train_dataset), "padding": padding, "tokens_per_s": seen / seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for packing in (False, True):
            r = measure(packing, args.steps, tmp)
            print(f"packing={packing!s:5}: {r['rows']} training rows, padding {r['padding']:.1%} of batch positions, "
                  f"{r['tokens_per_s']:,.0f} real tokens/s over {args.steps} steps", flush=True)


if __name__ == "__main__":
    main()
