"""Shared test helpers: compose the real config with tiny overrides; run the real entrypoint."""

import os
import sys
from pathlib import Path

# Before transformers / huggingface_hub are imported: they read these once, at import.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("WANDB_SILENT", "true")

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from sft_sweep.train import CONF_DIR, main

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# A few seconds of training: 12 steps of 8 rows, a 16-row eval set.
TINY = [
    "trainer.max_steps=12",
    "trainer.eval_steps=6",
    "trainer.logging_steps=2",
    "trainer.save_steps=1000",
    "trainer.max_length=256",
    "data.val_ratio=0",
    "data.min_val_size=16",
]


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _data_cache(tmp_path_factory):
    # One prepared/tokenized data cache for the session, never the repo's outputs/.
    os.environ["SFT_SWEEP_CACHE"] = str(tmp_path_factory.mktemp("data_cache"))


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    # Never touch the network; W&B writes offline into the test's temp dir.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")


def compose_cfg(*overrides: str, hydra: bool = False):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


def plain(*overrides: str) -> dict:
    return OmegaConf.to_container(compose_cfg(*overrides), resolve=True)


def run_cli(*args: str) -> int:
    """`python -m sft_sweep *args` in this process (imports paid once); returns the exit code."""
    GlobalHydra.instance().clear()
    saved = sys.argv
    sys.argv = ["sft_sweep", *args]
    try:
        main()
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = saved
        GlobalHydra.instance().clear()


@pytest.fixture
def chdir_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def env_without_network() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
