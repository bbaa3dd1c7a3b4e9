"""A Hydra app swept by both sweepers (tests/test_optuna_sweeper.py, tests/test_asha_sweeper.py): a bowl with its
lowest point at (x, y) = (1, -2); optionally it fails, diverges, returns a value of another type, reports a
descending curve (and so can be pruned or stopped; `+step_s`: each step takes that long), or two objectives."""

import time

import hydra
from hydra_pruning_sweepers import report
from hydra_pruning_sweepers.records import TrialDiverged
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def bowl(cfg: DictConfig):
    if cfg.fail:
        raise RuntimeError("the toy app failed on purpose")
    if cfg.get("diverge"):
        raise TrialDiverged("the toy app's curve blew up")
    value = (cfg.x - 1) ** 2 + (cfg.y + 2) ** 2 + cfg.get("w", 0) ** 2 + cfg.get("z", 0) ** 2
    if cfg.steps:  # a training-like curve: the value approached from above, reported at every step
        for step in range(1, cfg.steps + 1):
            time.sleep(cfg.get("step_s", 0))  # a step that takes time: a signal can land mid-trial
            report(step, value + 10.0 / step)
    if cfg.objectives == 2:
        return value, (cfg.x - 3) ** 2 + cfg.y ** 2
    if cfg.returns == "numpy":
        import numpy

        return numpy.float32(value)
    return str(value) if cfg.returns == "string" else value


def extend(cfg: DictConfig, trial) -> None:
    """custom_search_space: z follows x within cfg.z_within; +w is a key the config does not have."""
    x = trial.params["x"]
    trial.suggest_float("z", x - cfg.z_within, x + cfg.z_within)
    trial.suggest_float("+w", 0.0, 1.0)


def recorded(sweep_dir: str, final: bool) -> None:
    """on_record: after each trial's row (final=False) and after the results (final=True), what the hook sees."""
    import json
    from pathlib import Path

    sweep = Path(sweep_dir)
    rows = len((sweep / "trials.jsonl").read_text().splitlines())
    with open(sweep / "hook.jsonl", "a") as f:
        f.write(json.dumps({"final": final, "rows": rows,
                            "results": (sweep / "optimization_results.yaml").is_file()}) + "\n")


if __name__ == "__main__":
    bowl()
