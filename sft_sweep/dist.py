"""Which process this is under torchrun / accelerate (launch/multi_gpu.sh); one process otherwise.

Only rank 0 writes the run's records, logs to W&B and runs the end-of-run evaluation.
"""

import os


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return rank() == 0
