"""How a run ended: the sweepers' words (hydra_pruning_sweepers.records.Status), so that a run's manifest,
a sweep's trial rows, the reports and resume say the same thing. Spelled there only.

    started      the run is going -- or was killed without a word (its manifest was never updated)
    completed    trained to the end; its records (metrics.json last) are written
    pruned       an Optuna pruner stopped it early (its curve and records are kept)
    stopped      a sweep's scheduler (ASHA) stopped it early
    diverged     the training monitor stopped it (a sweep counts it failed)
    failed       an error ended it
    interrupted  a signal (Ctrl-C, SIGTERM, a cluster's preemption) stopped it after a checkpoint:
                 the same command resumes it
"""

from hydra_pruning_sweepers.records import Status

__all__ = ["Status"]
