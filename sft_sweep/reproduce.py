"""Re-run a finished run, or a sweep's best trial, from its saved config.

    python -m sft_sweep.reproduce outputs/sweeps/<sweep> --best    # the trial optimization_results.yaml names
    python -m sft_sweep.reproduce outputs/runs/<run>                # any run dir
Extra arguments are Hydra overrides (e.g. hydra.run.dir=...); by default the new run goes to
<run>/reproduced-<time>. Same as: python -m sft_sweep --config-path <run>/.hydra --config-name config
"""

import argparse
import sys
import time
from pathlib import Path

import yaml

from sft_sweep.errors import UserError


def best_run_dir(sweep_dir: Path) -> Path:
    results = sweep_dir / "optimization_results.yaml"
    if not results.is_file():
        raise UserError(f"{results} not found: is {sweep_dir} a finished sweep?")
    run_dir = yaml.safe_load(results.read_text(encoding="utf-8")).get("best_run_dir")
    if not run_dir:
        raise UserError(f"{results} names no best_run_dir")
    return Path(run_dir)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="a run dir, or a sweep dir with --best")
    parser.add_argument("--best", action="store_true", help="reproduce the sweep's best trial")
    args, overrides = parser.parse_known_args(argv)
    try:
        run_dir = best_run_dir(args.path) if args.best else args.path
        if not (run_dir / ".hydra" / "config.yaml").is_file():
            raise UserError(f"{run_dir / '.hydra' / 'config.yaml'} not found: not a run dir")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not any(o.startswith("hydra.run.dir=") for o in overrides):
        overrides.append(f"hydra.run.dir={run_dir.resolve()}/reproduced-{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    from sft_sweep import train

    sys.argv = ["sft_sweep", "--config-path", str(run_dir / ".hydra"), "--config-name", "config", *overrides]
    try:
        train.main()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
