"""Framework overhead: `python -m sft_sweep` against a plain TRL script doing the same training.

    python -m sft_sweep.benchmarks.overhead [--repeats 2]

Both run as fresh processes (start-up and imports included), interleaved A B A B so machine
noise hits both alike; prints each wall time, the medians and the ratio. Target: <= 1.03.
The end-of-run evaluation (generation, probes) is a feature the plain script lacks, so it is
off here (`eval.enabled=false`); the monitor, data pipeline and run records stay on.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The plain script's schedule (plain_trl.py), instead of the tiny preset's packed 7 epochs.
SAME_SCHEDULE = ["eval.enabled=false", "trainer.max_steps=200", "trainer.packing=false", "trainer.max_length=1024",
                 "trainer.per_device_train_batch_size=8", "trainer.eval_steps=50", "trainer.logging_steps=10"]


def timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    times = {"sft_sweep": [], "plain_trl": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            times["sft_sweep"].append(timed([sys.executable, "-m", "sft_sweep", f"hydra.run.dir={tmp}/ours{i}",
                                              *SAME_SCHEDULE, f"data.cache_dir={tmp}/cache{i}"]))
            plain_cmd = [sys.executable, "-m", "sft_sweep.benchmarks.plain_trl", f"{tmp}/plain{i}"]
            times["plain_trl"].append(timed(plain_cmd))
            print(f"repeat {i}: sft_sweep {times['sft_sweep'][-1]:.1f}s  plain TRL {times['plain_trl'][-1]:.1f}s",
                  flush=True)
    ours, plain = statistics.median(times["sft_sweep"]), statistics.median(times["plain_trl"])
    print(f"median wall time: python -m sft_sweep {ours:.1f}s, plain TRL script {plain:.1f}s, "
          f"ratio {ours / plain:.3f} ({(ours / plain - 1) * 100:+.1f}%)")


if __name__ == "__main__":
    main()
