"""A Hydra app that knows nothing of sft-sweep, swept by the sft_optuna sweeper in tests/sweepers/test_any_app.py:
a bowl with its lowest point at (x, y) = (1, -2); optionally it fails, returns a value of another type, reports a
descending curve (and so can be pruned), or two objectives."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def bowl(cfg: DictConfig):
    if cfg.fail:
        raise RuntimeError("the toy app failed on purpose")
    value = (cfg.x - 1) ** 2 + (cfg.y + 2) ** 2 + cfg.get("w", 0) ** 2 + cfg.get("z", 0) ** 2
    if cfg.steps:  # a training-like curve: the value approached from above, reported at every step
        from hydra_plugins.sft_sweep_sweepers.optuna_trial import report

        for step in range(1, cfg.steps + 1):
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


if __name__ == "__main__":
    bowl()
