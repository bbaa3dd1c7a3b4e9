"""What a run leaves in its dir: the manifest, metrics.json, the log history.

A run is *finished* once `metrics.json` exists (it is written last, atomically); such a
dir is never reused unless `overwrite=true`.
"""

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from sft_sweep.errors import UserError

METRICS = "metrics.json"
PACKAGES = ["torch", "transformers", "trl", "peft", "datasets", "accelerate", "bitsandbytes",
            "hydra-core", "omegaconf", "wandb", "sft-sweep"]


def write_json(path: Path, data) -> None:
    """Write via a temp file + rename, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False, default=str)
        f.write("\n")
    os.replace(tmp, path)


def refuse_finished(run_dir: Path, overwrite: bool) -> None:
    if (run_dir / METRICS).exists() and not overwrite:
        raise UserError(f"{run_dir} already holds a finished run ({METRICS}); "
                        f"choose another hydra.run.dir or pass overwrite=true")


class RefuseFinishedRunDir(Callback):
    """Checks the run dir before Hydra writes its .hydra/ files into it."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        refuse_finished(Path(config.hydra.run.dir), config.get("overwrite", False))


def git_state() -> dict:
    root = Path(__file__).resolve().parents[1]

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
    info = {"platform": platform.platform(), "python": sys.version.split()[0], "cpu_count": os.cpu_count(),
            "cuda": torch.version.cuda, "gpus": [], "world_size": int(os.environ.get("WORLD_SIZE", "1"))}
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def write_manifest(run_dir: Path, cfg: DictConfig, **extra) -> None:
    write_json(run_dir / "run_manifest.json", {
        "command": sys.argv,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "seed": cfg.seed,
        "git": git_state(),
        "versions": package_versions(),
        "hardware": hardware(),
        **extra,
    })


def peak_memory_mib() -> dict:
    # ru_maxrss is in KiB on Linux.
    peak = {"cpu_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        peak["gpu_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return peak
