"""Early stopping against the full budget, on the embedded default: the same search space and number of sampled
trials swept by Optuna + Hyperband, by ASHA, and by ASHA with no early stop (grace period = the full budget).

    python -m sft_sweep.benchmarks.sweeps [--samples 8] [--steps 60]

Reports each sweep's trial-steps (every trial's steps, summed) and its best eval loss (the lowest any trial
reached), and both against the full budget. Target: <= 40% of the steps, best within 2%.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from sft_sweep.run_dir import RunDir, SweepDir, read_json, read_jsonl

REPO = Path(__file__).resolve().parents[2]


def sweep(sweep_dir: Path, search: str, samples: int, steps: int, *extra: str) -> dict:
    budget = "hydra.sweeper.n_trials" if search == "optuna" else "hydra.sweeper.num_samples"
    subprocess.run([sys.executable, "-m", "sft_sweep", "-m", f"hparams_search={search}", f"{budget}={samples}",
                    f"trainer.max_steps={steps}", f"trainer.eval_steps={max(1, steps // 12)}",
                    "trainer.eval_on_start=false", f"hydra.sweep.dir={sweep_dir}", *extra],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = read_jsonl(SweepDir(sweep_dir).trials)
    best = min(lowest_eval_loss(RunDir(r["run_dir"])) for r in rows)
    return {"steps": sum(r["steps"] or 0 for r in rows), "best": best,
            "stopped": sum(r["status"] in ("pruned", "stopped early") for r in rows), "trials": len(rows)}


def lowest_eval_loss(run_dir: RunDir) -> float:
    """Over every evaluation of the trial (a killed ASHA trial has only its Tune reports)."""
    records = read_json(run_dir.log_history) if run_dir.log_history.is_file() else read_jsonl(run_dir.tune_progress)
    return min((r["eval_loss"] for r in records if "eval_loss" in r), default=float("inf"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    grace = max(1, args.steps // 12)
    asha = ["hydra.sweeper.scheduler.reduction_factor=3", "hydra.sweeper.ray_init.num_cpus=2"]
    with tempfile.TemporaryDirectory() as tmp:
        results = {
            "Optuna + Hyperband": sweep(Path(tmp) / "optuna", "optuna", args.samples, args.steps),
            "ASHA": sweep(Path(tmp) / "asha", "asha", args.samples, args.steps, *asha,
                          f"hydra.sweeper.scheduler.grace_period={grace}"),
            "full budget": sweep(Path(tmp) / "full", "asha", args.samples, args.steps, *asha,
                                 f"hydra.sweeper.scheduler.grace_period={args.steps}"),
        }
    full = results["full budget"]
    for name, r in results.items():
        print(f"{name:>18}: {r['trials']} trials, {r['stopped']} stopped early, {r['steps']} trial-steps "
              f"({r['steps'] / full['steps']:.0%} of the full budget), best eval_loss {r['best']:.4f} "
              f"({(r['best'] / full['best'] - 1) * 100:+.2f}%)", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
