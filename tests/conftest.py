"""Fixtures for every test: no network, W&B offline in the test's temp dir, one data cache per
session; `gpu` tests skip without CUDA. Helpers live in tests/helpers.py."""

import os

# Before transformers / huggingface_hub are imported: they read these once, at import.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("WANDB_SILENT", "true")
if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n 2`: a core per worker (torch's threads would contend)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# Fixtures that train a model or start a cluster once for the tests that read it. `--dist loadgroup`
# (pyproject.toml) sends every test of one group to one xdist worker, so each is made once, not once per worker.
SHARED = ("tiny_run", "reference", "cluster", "pruned_sweep")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    # The slow tests first (in file order), so that the fast ones fill the end: xdist hands out tests in this order as
    # workers free up, and a long test handed out last keeps one worker busy while the other idles.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    for item in items:
        for name in SHARED:
            if name in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.xdist_group(name))
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


@pytest.fixture(scope="session")
def tok():
    """The embedded tiny model's tokenizer."""
    from transformers import AutoTokenizer

    from sft_sweep.config import asset_path

    return AutoTokenizer.from_pretrained(asset_path("tiny_tokenizer"))


@pytest.fixture(scope="session")
def sample_rows():
    """The first 60 conversations of the bundled sample data."""
    import json

    from sft_sweep.config import asset_path

    rows = [json.loads(line) for line in open(asset_path("sample/chat.jsonl"), encoding="utf-8")][:60]
    return [{"messages": r["messages"], "tools": r.get("tools")} for r in rows]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The session's finished run of the tiny model (tests.helpers.TINY_RUN), for the tests that only read it: its
    records and report (test_train.py, test_report.py), evaluated, exported, served and chatted with
    (test_evaluation.py, test_export.py, test_serve.py). Trained once: its readers share one xdist worker (SHARED)."""
    from tests.helpers import TINY_RUN, run_cli

    run_dir = tmp_path_factory.mktemp("tiny_run") / "run"
    assert run_cli(f"hydra.run.dir={run_dir}", *TINY_RUN) == 0
    return run_dir
