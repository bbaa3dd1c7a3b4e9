"""The sweep benchmark's pieces that need no training: the shared configurations as a Hydra override, and the
replays of recorded eval curves through Optuna's pruners and Ray's ASHA scheduler."""

from hydra.core.override_parser.overrides_parser import OverridesParser

from sft_sweep.benchmarks.sweeps import as_enqueue, replay_asha, replay_optuna, spread

# Eight configurations whose eval losses keep their order at every evaluation (2, 4, ..., 16 steps):
# configuration i ends at 1 + i; the best is 1.0.
CURVES = [{step: 1 + i + 8 / step for step in range(2, 17, 2)} for i in range(8)]
FULL = {"steps": 8 * 16, "best": 1.0 + 8 / 16}
HALVING = {"_target_": "optuna.pruners.SuccessiveHalvingPruner", "min_resource": 2, "reduction_factor": 2}


def test_the_configurations_reach_the_sweepers_exactly():
    configs = [{"optim.learning_rate": 0.00012520653814999459, "lora.r": 8, "optim.warmup_steps": 0.19273255210020587},
               {"optim.learning_rate": 6.82407842709883e-05, "lora.r": 64, "optim.warmup_steps": 0.0}]
    [override] = OverridesParser.create().parse_overrides([as_enqueue(configs)])
    assert override.get_key_element() == "hydra.sweeper.enqueue" and override.value() == configs


def test_without_early_stopping_a_replay_trains_every_step():
    nop = {"_target_": "optuna.pruners.NopPruner"}
    assert all(replay_optuna(CURVES, nop, seed) == (FULL["steps"], FULL["best"]) for seed in range(3))
    no_rungs = {"_target_": "ray.tune.schedulers.ASHAScheduler", "grace_period": 16, "reduction_factor": 2, "max_t": 16}
    assert all(replay_asha(CURVES, no_rungs, seed) == (FULL["steps"], FULL["best"]) for seed in range(3))


def test_early_stopping_replays_keep_the_best_and_stop_the_rest_at_their_rungs():
    asha = {"_target_": "ray.tune.schedulers.ASHAScheduler", "grace_period": 2, "reduction_factor": 2, "max_t": 16}
    for runs in ([replay_optuna(CURVES, HALVING, seed) for seed in range(5)],
                 [replay_asha(CURVES, asha, seed) for seed in range(5)]):
        for steps, best in runs:
            # the best configuration leads at every rung, so it always runs to the end; every other one ran
            # at least to the first rung (2 steps), and some stopped there or at the next
            assert best == FULL["best"]
            assert 16 + 7 * 2 <= steps < FULL["steps"] and steps % 2 == 0
        assert sum(steps for steps, _ in runs) < 0.6 * 5 * FULL["steps"]
        assert len({steps for steps, _ in runs}) > 1  # the order of arrival matters
    assert spread([(FULL["steps"], FULL["best"]), (40, FULL["best"] * 1.05)], FULL) == (
        "steps 66% on average (31%-100%), best within 2% in 1 of 2")
