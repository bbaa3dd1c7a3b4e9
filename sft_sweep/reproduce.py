"""Re-run a finished run, or a sweep's best trial, from its saved config.

    python -m sft_sweep.reproduce outputs/sweeps/<sweep> --best    # the trial optimization_results.yaml names
    python -m sft_sweep.reproduce outputs/sweeps/<sweep> --trial 7 # any trial of a sweep
    python -m sft_sweep.reproduce outputs/runs/<run>                # any run dir

A multi-objective sweep's best (--best) is its Pareto front's trial with the best first objective
(optimization_results.yaml: best_trial_by); the front's other trials are listed there, under solutions.

Extra arguments are Hydra overrides (e.g. trainer.max_steps=100). The new run goes to outputs/runs/<time>/
like any run. Same as: python -m sft_sweep --config-path <run>/.hydra --config-name config
"""

import argparse
import runpy
import shlex
import sys
from pathlib import Path

from sft_sweep.errors import UserError, one_line_errors
from sft_sweep.run_dir import RunDir, SweepDir, best_run, trial_run


@one_line_errors
def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m sft_sweep.reproduce", description=__doc__.splitlines()[0],
                                     epilog="Extra arguments are Hydra overrides.")
    parser.add_argument("path", type=Path, help="a run dir, or a sweep dir with --best")
    parser.add_argument("--best", action="store_true", help="reproduce the sweep's best trial")
    parser.add_argument("--trial", type=int, default=None, help="reproduce this trial of the sweep")
    args, overrides = parser.parse_known_args(argv)
    run_dir = (best_run(SweepDir(args.path)) if args.best else trial_run(SweepDir(args.path), args.trial)
               if args.trial is not None else RunDir(args.path))
    if not run_dir.hydra_config.is_file():
        raise UserError(f"{run_dir.hydra_config} not found: {run_dir.path} is not a run dir")
    command = ["--config-path", str(run_dir.hydra_config.parent), "--config-name", "config", *overrides]
    print(f"running: python -m sft_sweep {shlex.join(command)}", flush=True)
    sys.argv = ["sft_sweep", *command]
    try:
        runpy.run_module("sft_sweep", run_name="__main__", alter_sys=True)  # as `python -m sft_sweep` would
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
