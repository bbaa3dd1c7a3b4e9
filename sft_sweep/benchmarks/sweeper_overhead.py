"""What the optuna_pruning sweeper costs per trial, on a Hydra app whose trials cost nothing.

    python -m sft_sweep.benchmarks.sweeper_overhead [--trials 40] [--repeats 3]

A toy app (written to a temp dir: it returns x**2 + y**2) is swept twice in fresh processes, with 2 trials and
with 2 + `--trials` trials (random sampler, journal storage in the sweep dir, the sweep report rewritten after
every trial); the difference divided by `--trials` is the sweeper's cost per trial -- asking, launching the Hydra
job, telling, the records and the report -- without the start-up both runs pay. Prints each repeat and the median.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

APP = '''
import hydra

@hydra.main(version_base="1.3", config_path=".", config_name="config")
def app(cfg):
    return cfg.x ** 2 + cfg.y ** 2

if __name__ == "__main__":
    app()
'''
CONFIG = '''
defaults:
  - override hydra/sweeper: optuna_pruning
  - override hydra/sweeper/sampler: random
x: 0.0
y: 0.0
hydra:
  sweeper:
    params:
      x: interval(-5, 5)
      y: interval(-5, 5)
'''


def timed_sweep(folder: Path, trials: int) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, str(folder / "app.py"), "--multirun", f"hydra.sweeper.n_trials={trials}",
                    f"hydra.sweep.dir={folder / f'sweep{trials}_{time.time_ns()}'}"], cwd=folder, check=True,
                   capture_output=True)
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "app.py").write_text(APP)
        (folder / "config.yaml").write_text(CONFIG)
        per_trial = []
        for i in range(args.repeats):
            short, long = timed_sweep(folder, 2), timed_sweep(folder, 2 + args.trials)
            per_trial.append((long - short) / args.trials)
            print(f"repeat {i}: 2 trials {short:.2f} s, {2 + args.trials} trials {long:.2f} s: "
                  f"{per_trial[-1]:.3f} s per trial", flush=True)
    print(f"median: {statistics.median(per_trial):.3f} s per trial")


if __name__ == "__main__":
    main()
