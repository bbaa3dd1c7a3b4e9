"""Early stopping against the full budget, on the embedded default: the same sampled configurations swept
three times -- every one trained for the full budget (Optuna, no pruner), then Optuna + Hyperband and
Ray Tune ASHA with their presets' rungs -- so any difference in the best eval loss is the early stopping's.

    python -m sft_sweep.benchmarks.sweeps [--samples 20] [--steps 60] [--orders 30]

Reports each sweep's trial-steps (every trial's steps, summed) and its best eval loss (the lowest any trial
reached), both against the full budget. Target: <= 40% of the steps, best within 2%. One sweep is one order
of arrival (and, for Hyperband, one assignment of trials to brackets), so the full budget's eval curves are
then replayed through the same pruner and scheduler (Optuna's and Ray's own code) in `--orders` shuffled
orders to show the spread. Last, the Optuna preset as users run it: TPE picks its own 20 configurations,
learning from the trials before, with Hyperband pruning -- against the same full budget of random ones.
"""

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from sft_sweep import metric_names as names
from sft_sweep.report import trial_curve
from sft_sweep.run_dir import RunDir, SweepDir, read_jsonl
from sft_sweep.status import Status

REPO = Path(__file__).resolve().parents[2]


def sweep(sweep_dir: Path, search: str, samples: int, steps: int, *extra: str) -> list[dict]:
    """Run one sweep of the presets (only the trial length scaled down); its trials.jsonl rows by trial."""
    budget = "hydra.sweeper.n_trials" if search == "optuna" else "hydra.sweeper.num_samples"
    subprocess.run([sys.executable, "-m", "sft_sweep", "-m", f"hparams_search={search}", f"{budget}={samples}",
                    f"trainer.max_steps={steps}", f"trainer.eval_steps={max(1, steps // 12)}",
                    f"hydra.sweep.dir={sweep_dir}", *extra],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return sorted(read_jsonl(SweepDir(sweep_dir).trials), key=lambda r: r["trial"])


def eval_curve(run_dir: RunDir) -> dict[int, float]:
    """step -> eval loss at every evaluation after step 0."""
    return {step: loss for step, loss in trial_curve(run_dir, names.EVAL_LOSS) if step > 0}


def summary(rows: list[dict]) -> dict:
    return {"trials": len(rows), "cut_short": sum(Status(r["status"]).cut_short for r in rows),
            "steps": sum(r["steps"] or 0 for r in rows),
            "best": min(min(eval_curve(RunDir(r["run_dir"])).values(), default=float("inf")) for r in rows)}


def as_enqueue(configs: list[dict]) -> str:
    """The configurations as `hydra.sweeper.enqueue` in Hydra's override grammar."""
    return "hydra.sweeper.enqueue=[" + ",".join(
        "{" + ",".join(f"{key}:{value!r}" for key, value in c.items()) + "}" for c in configs) + "]"


# --- replays: the full budget's curves through the same early stopping, in other orders -------------------
def replay_optuna(curves: list[dict], pruner_spec: dict, seed: int) -> tuple[int, float]:
    """(trial-steps, best eval loss) of the curves arriving in a shuffled order, one at a time."""
    import optuna
    from hydra.utils import instantiate

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    order = random.Random(seed).sample(curves, len(curves))
    study = optuna.create_study(study_name=f"replay-{seed}", pruner=instantiate(pruner_spec))
    used, best = 0, float("inf")
    for curve in order:
        trial, end = study.ask(), max(curve)
        for step in sorted(curve):
            trial.report(curve[step], step)
            best = min(best, curve[step])
            if step < end and trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(trial, curve[end])
        used += step
    return used, best


def replay_asha(curves: list[dict], scheduler: dict, seed: int) -> tuple[int, float]:
    """The same through Ray's ASHAScheduler, one trial at a time (the real sweep runs one per core)."""
    from types import SimpleNamespace

    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    kwargs = {k: v for k, v in scheduler.items() if k != "_target_"}
    asha = ASHAScheduler(time_attr="step", metric=names.EVAL_LOSS, mode="min", **kwargs)
    used, best = 0, float("inf")
    for i, curve in enumerate(random.Random(seed).sample(curves, len(curves))):
        trial = SimpleNamespace(trial_id=f"replay_{i:05d}")
        asha.on_trial_add(None, trial)
        for step in sorted(curve):
            best, last = min(best, curve[step]), step
            if asha.on_trial_result(None, trial, {"step": step, names.EVAL_LOSS: curve[step]}) == TrialScheduler.STOP:
                break
        used += last
    return used, best


def spread(runs: list[tuple[int, float]], full: dict) -> str:
    shares = [steps / full["steps"] for steps, _ in runs]
    within = sum(best <= full["best"] * 1.02 for _, best in runs)
    return (f"steps {sum(shares) / len(shares):.0%} on average ({min(shares):.0%}-{max(shares):.0%}), "
            f"best within 2% in {within} of {len(runs)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--orders", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        full_rows = sweep(tmp / "full", "optuna", args.samples, args.steps, "hydra/sweeper/sampler=random",
                          "hydra.sweeper.sampler.seed=0", "hydra/sweeper/pruner=none")
        same = as_enqueue([r["params"] for r in full_rows])  # every sweep trains these, in this order
        hyperband_rows = sweep(tmp / "optuna", "optuna", args.samples, args.steps, same)
        asha_rows = sweep(tmp / "asha", "asha", args.samples, args.steps, same, "hydra.sweeper.ray_init.num_cpus=2")
        tpe_rows = sweep(tmp / "tpe", "optuna", args.samples, args.steps)
        results = {"Optuna + Hyperband": summary(hyperband_rows), "ASHA": summary(asha_rows),
                   "full budget": summary(full_rows), "TPE + Hyperband, its own configurations": summary(tpe_rows)}
        pruner, scheduler = (yaml.safe_load(SweepDir(tmp / name).settings.read_text())["early_stopping"]
                             for name in ("optuna", "asha"))
        curves = [eval_curve(RunDir(r["run_dir"])) for r in full_rows]
    full = results["full budget"]
    print(f"{args.samples} configurations x {args.steps} steps, eval every {max(1, args.steps // 12)} steps\n"
          f"  Optuna: {pruner}\n  ASHA: {scheduler}")
    for name, r in results.items():
        print(f"{name:>18}: {r['trials']} trials, {r['cut_short']} stopped early, {r['steps']} trial-steps "
              f"({r['steps'] / full['steps']:.0%} of the full budget), best eval_loss {r['best']:.4f} "
              f"({(r['best'] / full['best'] - 1) * 100:+.2f}%)", flush=True)
    replays = {}
    for name, kind, spec in [("Optuna + Hyperband", "optuna", pruner), ("ASHA", "asha", scheduler),
                             *alternatives(pruner, scheduler)]:
        replay = replay_optuna if kind == "optuna" else replay_asha
        replays[name] = [replay(curves, spec, seed) for seed in range(args.orders)]
        print(f"{name:>18}, the full budget's curves in {args.orders} shuffled orders: {spread(replays[name], full)}"
              + ("" if name in results else f"  {spec}"))
    print(json.dumps({**results, "replays": {name: [{"steps": s, "best": b} for s, b in runs]
                                             for name, runs in replays.items()}}))


def alternatives(pruner: dict, scheduler: dict) -> list[tuple[str, str, dict]]:
    """Other reduction factors for the presets, and the other pruners with their groups' defaults, on the same
    first rung: what the presets' choices are measured against."""
    from dataclasses import asdict

    from hydra_plugins.hydra_pruning_sweepers.optuna_sweeper import MedianPrunerConf, SuccessiveHalvingPrunerConf

    out = [(f"Hyperband, factor {rf}", "optuna", {**pruner, "reduction_factor": rf})
           for rf in (2, 3, 4) if rf != pruner.get("reduction_factor")]
    out += [(f"ASHA, factor {rf}", "asha", {**scheduler, "reduction_factor": rf})
            for rf in (2, 3, 4) if rf != scheduler["reduction_factor"]]
    halving = {**asdict(SuccessiveHalvingPrunerConf()), "min_resource": pruner["min_resource"]}
    return out + [(f"succ. halving, {halving['reduction_factor']}", "optuna", halving),
                  ("median", "optuna", asdict(MedianPrunerConf()))]

if __name__ == "__main__":
    main()
