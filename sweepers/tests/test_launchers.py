"""The launcher adapter (launchers.py) on the real launcher plugins: which launcher runs trials in this process
(Hydra's `basic` choice), on SLURM or on Ray (by the plugins' classes), and how a job that died without a result is
recognised; and the one use of Optuna that has no public way (a live Trial built by number, optuna_trial.take_up):
an upgrade that changes either fails here."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.plugins import Plugins
from hydra.types import HydraContext
from hydra_pruning_sweepers.launchers import (
    SlurmJobs,
    died_without_result,
    on_ray,
    on_slurm,
    runs_in_this_process,
)
from omegaconf import OmegaConf

TOY_CONF = Path(__file__).parent / "toy" / "conf"


@pytest.mark.parametrize("launcher, plugin, here, slurm, ray", [
    ("basic", None, True, False, False),
    ("submitit_local", "hydra_plugins.hydra_submitit_launcher", False, False, False),
    ("submitit_slurm", "hydra_plugins.hydra_submitit_launcher", False, True, False),
    ("ray", "hydra_plugins.hydra_ray_launcher", False, False, True)])
def test_each_launcher_is_recognised(launcher, plugin, here, slurm, ray, tmp_path):
    if plugin:
        pytest.importorskip(plugin, reason=f"hydra/launcher={launcher} is not installed")
    with initialize_config_dir(str(TOY_CONF), version_base="1.3"):
        config = compose("config", [f"hydra/launcher={launcher}", f"hydra.sweep.dir={tmp_path}"],
                         return_hydra_config=True)
    instance = Plugins.instance().instantiate_launcher(hydra_context=HydraContext(config_loader=None, callbacks=None),
                                                       task_function=lambda cfg: None, config=config)
    assert (runs_in_this_process(config), on_slurm(instance), on_ray(instance)) == (here, slurm, ray)
    jobs = SlurmJobs(instance, config)
    assert jobs.active == slurm
    assert jobs.folder == (OmegaConf.select(config, "hydra.launcher.submitit_folder") if slurm else None)
    assert jobs.to_adopt(tmp_path) == (None, None)  # no trial ran here: nothing to adopt on any launcher


def test_a_job_that_died_without_a_result_is_submitits_uncompleted_job():
    pytest.importorskip("submitit", reason="the submitit extra is not installed")
    from submitit.core.utils import FailedJobError, UncompletedJobError

    assert died_without_result(UncompletedJobError("Job 12 (task: 0) with path ... has not produced any output"))
    # a job that raised left a result (its error): not a death, and neither is any other exception
    assert not died_without_result(FailedJobError("the job raised")) and not died_without_result(ValueError())


def test_a_trial_taken_up_by_number_reports_to_the_study_and_is_pruned_by_it(tmp_path):
    """optuna_trial.take_up (Optuna's Trial constructor, the one way to a live trial asked elsewhere): a report
    through it is the study's intermediate value, and the study's pruner judges it."""
    import optuna
    from hydra_pruning_sweepers.optuna_trial import open_storage, take_up

    storage = open_storage(None, tmp_path)
    study = optuna.create_study(study_name="s", storage=storage)
    asked = [study.ask() for _ in range(3)]
    elsewhere = optuna.load_study(study_name="s", storage=storage)  # as a trial's process loads it
    elsewhere.pruner = optuna.pruners.ThresholdPruner(upper=1.0)  # (a study keeps no pruner: the trial sets it)
    trial = take_up(elsewhere, storage, asked[2].number)
    trial.report(0.5, step=1)
    assert not trial.should_prune()
    trial.report(2.0, step=2)
    assert trial.should_prune()
    assert study.trials[2].intermediate_values == {1: 0.5, 2: 2.0} and not study.trials[1].intermediate_values
