"""ASHA against running the same sampled configurations to the full budget, on the tiny workload.

    python -m sft_sweep.benchmarks.asha [--samples 8] [--steps 60]

Both sweeps draw the same configurations (same seed); the full-budget one sets grace_period =
max_t, so no trial stops early. Reports total trial-steps and the best eval loss of each, and the
ratios. Target: ASHA spends <= 40% of the steps and lands within 2% of the full-budget best.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from sft_sweep.run_dir import SweepDir, read_jsonl

REPO = Path(__file__).resolve().parents[2]


def sweep(sweep_dir: Path, samples: int, steps: int, grace: int) -> dict:
    subprocess.run([sys.executable, "-m", "sft_sweep", "-m", "hparams_search=asha",
                    f"hydra.sweeper.num_samples={samples}", f"trainer.max_steps={steps}",
                    f"trainer.eval_steps={max(1, steps // 12)}", f"hydra.sweeper.scheduler.grace_period={grace}",
                    "hydra.sweeper.scheduler.reduction_factor=3", "hydra.sweeper.ray_init.num_cpus=2",
                    "trainer.eval_on_start=false", f"hydra.sweep.dir={sweep_dir}"],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = read_jsonl(SweepDir(sweep_dir).trials)
    return {"steps": sum(r["steps"] or 0 for r in rows), "best": min(r["best_eval_loss"] for r in rows),
            "stopped": sum(r["status"] == "stopped early" for r in rows), "trials": len(rows)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asha = sweep(Path(tmp) / "asha", args.samples, args.steps, grace=max(1, args.steps // 12))
        print(f"ASHA:        {asha['trials']} trials, {asha['stopped']} stopped early, {asha['steps']} trial-steps, "
              f"best eval_loss {asha['best']:.4f}", flush=True)
        full = sweep(Path(tmp) / "full", args.samples, args.steps, grace=args.steps)
        print(f"full budget: {full['trials']} trials, {full['steps']} trial-steps, best eval_loss {full['best']:.4f}")
    print(f"ASHA used {asha['steps'] / full['steps']:.0%} of the steps; its best is "
          f"{(asha['best'] / full['best'] - 1) * 100:+.2f}% from the full-budget best")


if __name__ == "__main__":
    main()
