"""Test helpers: compose the real config with tiny overrides; run the real entrypoint in-process."""

import json
import os
import re
import runpy
import sys
import time
from pathlib import Path

from hydra.core.global_hydra import GlobalHydra

from sft_sweep import config

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# A few seconds of training: 12 steps of 8 unpacked rows, a 16-row eval set.
TINY = [
    "trainer.max_steps=12",
    "trainer.packing=false",
    "trainer.per_device_train_batch_size=8",
    "trainer.eval_steps=6",
    "trainer.logging_steps=2",
    "trainer.save_steps=1000",
    "trainer.max_length=256",
    "data.val_ratio=0",
    "data.min_val_size=16",
]
# The session's one shared run (conftest's tiny_run): 30 steps, its 16 validation rows answered, and a monitor that
# flags every gradient norm above 0.5 (a warning, training unchanged), so that the report has events to mark.
TINY_RUN = [*TINY, "trainer.max_steps=30", "eval.max_samples=40", "monitor.grad_norm_threshold=0.5"]


def compose_cfg(*overrides: str, hydra: bool = False):
    return config.compose(list(overrides), hydra=hydra)


def plain(*overrides: str) -> dict:
    return config.plain(compose_cfg(*overrides))


def run_cli(*args: str) -> int:
    """`python -m sft_sweep *args` in this process (imports paid once); returns the exit code."""
    GlobalHydra.instance().clear()
    saved = sys.argv
    sys.argv = ["sft_sweep", *args]
    try:
        runpy.run_module("sft_sweep", run_name="__main__")
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = saved
        GlobalHydra.instance().clear()


def env_without_network() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}


def render_in_chromium(html: Path, png: Path) -> str:
    """Open a report in headless Chromium (Debian's `chromium`): a screenshot in `png`; returns the
    DOM after its scripts ran. Raises if the page logged a JavaScript error."""
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        import pytest

        pytest.skip("chromium is not installed (apt-get install chromium)")
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr",
             "--v=0", "--window-size=1280,2000"]
    shot = subprocess.run([*flags, f"--screenshot={png}", html.as_uri()], capture_output=True, text=True,
                          timeout=120)
    dom = subprocess.run([*flags, "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=120)
    errors = [line for line in (shot.stderr + dom.stderr).splitlines() if "Uncaught" in line or "SyntaxError" in line]
    if errors:
        raise AssertionError(f"JavaScript errors in {html}: {errors}")
    return dom.stdout


def embedded(html_path) -> dict:
    """The numbers a report.html embeds (`<script id="report-data">`)."""
    html = html_path.read_text(encoding="utf-8")
    match = re.search(r"<script type='application/json' id='report-data'>(.*?)</script>", html, re.S)
    return json.loads(match.group(1).replace("<\\/", "</"))


def read(path) -> object:
    """A JSON file's contents."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def losses(run_dir) -> list[tuple[int, float]]:
    """(step, training loss) of every logged training step of a finished run."""
    return [(h["step"], h["loss"]) for h in read(Path(run_dir) / "log_history.json") if "loss" in h]


def wait_for(path, proc, timeout: float = 300) -> None:
    """Until `path` exists, while `proc` runs (its output, if it ended first)."""
    deadline = time.time() + timeout
    while not Path(path).exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.1)
