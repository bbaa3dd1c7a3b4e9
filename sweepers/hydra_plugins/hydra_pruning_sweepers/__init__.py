"""The Hydra plugin side of hydra-pruning-sweepers: the sweepers' configs and entry points, which Hydra's plugin
scan finds here. Their work is in the `hydra_pruning_sweepers` package."""
