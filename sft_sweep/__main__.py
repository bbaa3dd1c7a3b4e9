"""The training entrypoint: `python -m sft_sweep [-v] [group=option ...] [key=value ...]`.

Hydra composes conf/config.yaml with the overrides and calls `hydra_main` in a fresh run dir
(outputs/runs/<time>/); the run itself reads top to bottom in sft_sweep/recipe.py. `-v` shows the
libraries' log records, warnings and progress bars on the console too (they always go to train.log).
"""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from sft_sweep import config, console
from sft_sweep.environment import in_sweep
from sft_sweep.errors import UserError, exit_in_one_line


@hydra.main(version_base="1.3", config_path=config.CONF_DIR, config_name="config")
def hydra_main(cfg: DictConfig) -> float:
    from sft_sweep import recipe  # imported here: `--help` and `--cfg` stay fast

    console.quiet_libraries()
    try:
        return recipe.run(cfg)
    except UserError as exc:
        if in_sweep():
            raise  # the sweeper records the failed trial and goes on
        exit_in_one_line(exc)


def prepare_argv(argv: list[str]) -> list[str]:
    """Read `--config-path`/`-cp` relative to the current dir (Hydra would read it relative to the
    package under `python -m`), and give a run's saved config (`<run>/.hydra`, which has no
    defaults list) our hydra settings, so a reproduction lands in outputs/runs/ like any run."""
    from hydra._internal.utils import get_args_parser

    argv = list(argv)
    config_path = None
    for i, arg in enumerate(argv):
        if i and argv[i - 1] in ("--config-path", "-cp"):
            argv[i] = config_path = str(Path(arg).resolve())
        elif arg.startswith("--config-path="):
            config_path = str(Path(arg.split("=", 1)[1]).resolve())
            argv[i] = "--config-path=" + config_path
    if config_path and (Path(config_path) / "hydra.yaml").is_file():
        # Hydra's parser wants the overrides in one run, so the options go first.
        overrides = get_args_parser().parse_args(argv[1:]).overrides
        options = list(argv[1:])
        for override in overrides:
            options.remove(override)
        argv = [argv[0], *options, "--config-dir", config.CONF_DIR, *overrides, "+hydra=default"]
    return argv


def main() -> None:
    config.register_resolvers()
    if verbose := [a for a in sys.argv[1:] if a in ("-v", "--verbose")]:
        os.environ[console.VERBOSE] = "1"
        sys.argv = [a for a in sys.argv if a not in verbose]
    sys.argv = prepare_argv(sys.argv)
    hydra_main()


if __name__ == "__main__":
    main()
