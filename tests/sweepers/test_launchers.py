"""The launcher adapter (_launchers.py) on the real launcher plugins: which launcher runs trials in this process, on
SLURM or on Ray -- by class, never by name -- and how a job that died without a result is recognised. Pins the one
private name it uses (Hydra's basic launcher lives in hydra._internal): a Hydra upgrade that moves it fails here."""

import pytest
from hydra.core.plugins import Plugins
from hydra.types import HydraContext
from omegaconf import OmegaConf

from hydra_plugins.sft_sweep_sweepers._launchers import (
    SlurmJobs,
    died_without_result,
    on_ray,
    on_slurm,
    runs_in_this_process,
)
from tests.helpers import compose_cfg


@pytest.mark.parametrize("launcher, here, slurm, ray", [("basic", True, False, False),
                                                        ("submitit_local", False, False, False),
                                                        ("submitit_slurm", False, True, False),
                                                        ("ray", False, False, True)])
def test_each_launcher_is_recognised_by_its_class(launcher, here, slurm, ray, tmp_path):
    config = compose_cfg(f"hydra/launcher={launcher}", f"hydra.sweep.dir={tmp_path}", hydra=True)
    instance = Plugins.instance().instantiate_launcher(hydra_context=HydraContext(config_loader=None, callbacks=None),
                                                       task_function=lambda cfg: None, config=config)
    assert (runs_in_this_process(instance), on_slurm(instance), on_ray(instance)) == (here, slurm, ray)
    jobs = SlurmJobs(instance, config)
    assert jobs.active == slurm
    assert jobs.folder == (OmegaConf.select(config, "hydra.launcher.submitit_folder") if slurm else None)
    assert jobs.to_adopt(tmp_path) == (None, None)  # no trial ran here: nothing to adopt on any launcher


def test_a_job_that_died_without_a_result_is_submitits_uncompleted_job():
    from submitit.core.utils import FailedJobError, UncompletedJobError

    assert died_without_result(UncompletedJobError("Job 12 (task: 0) with path ... has not produced any output"))
    # a job that raised left a result (its error): not a death, and neither is any other exception
    assert not died_without_result(FailedJobError("the job raised")) and not died_without_result(ValueError())


def test_a_trial_taken_up_by_number_reports_to_the_study_and_is_pruned_by_it(tmp_path):
    """optuna_trial.take_up (Optuna's Trial constructor, the one way to a live trial asked elsewhere): a report
    through it is the study's intermediate value, and the study's pruner judges it."""
    import optuna

    from hydra_plugins.sft_sweep_sweepers.optuna_trial import open_storage, take_up

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
