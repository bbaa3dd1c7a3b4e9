"""Where and how a run ran, for its manifest: the command that runs it again, git state, package versions, the
hardware, peak memory; whether this process is a sweep's trial."""

import os
import platform
import resource
import shlex
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from sft_sweep import dist
from sft_sweep.config import CONF_DIR

PACKAGES = ["torch", "transformers", "trl", "peft", "datasets", "accelerate", "bitsandbytes",
            "hydra-core", "omegaconf", "wandb", "optuna", "sft-sweep"]


def in_sweep() -> bool:
    """This run is one trial of a sweep (a Hydra multirun job)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def pasteable_command() -> str | None:
    """The command that runs this run again, as a user would type it: the sweep's sampled values
    included, `hparams_search=...` left out (that would start a sweep), under torchrun when the run had
    several processes (launch/multi_gpu.sh). None outside a Hydra job."""
    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    args = []
    main = next((s.path for s in hc.runtime.config_sources if s.provider == "main"), CONF_DIR)
    if Path(main).resolve() != Path(CONF_DIR).resolve() or hc.job.config_name != "config":
        args += ["--config-path", main, "--config-name", hc.job.config_name]
    args += [o for o in hc.overrides.task if not o.startswith(("hparams_search=", "+hydra="))]
    launcher = ["python"] if dist.world_size() == 1 else [
        "torchrun", "--standalone", f"--nproc_per_node={os.environ.get('LOCAL_WORLD_SIZE', dist.world_size())}"]
    return shlex.join([*launcher, "-m", "sft_sweep", *args])


def git_state() -> dict:
    root = Path(__file__).resolve().parents[1]  # the checkout sft_sweep runs from

    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").stdout.strip())
        return {"commit": head.stdout.strip(), "dirty": dirty}
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}


def package_versions() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def hardware() -> dict:
    import torch  # deferred: the light CLIs (report, reproduce) read runs without importing torch

    info = {"platform": platform.platform(), "python": sys.version.split()[0], "cpu_count": os.cpu_count(),
            "cuda": torch.version.cuda, "gpus": [], "world_size": dist.world_size()}
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def peak_memory_mib() -> dict:
    import torch  # (as hardware())

    # ru_maxrss is in KiB on Linux.
    peak = {"cpu_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        peak["gpu_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return peak
