"""The README's ten-line app and its four sweep commands, as written there, with neither torch nor sft-sweep
importable (each raises ImportError): pruning, a grid, two objectives, ASHA."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow
README = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")


def block(language: str, index: int = 0) -> str:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)[index]


COMMANDS = [shlex.split(line) for line in block("bash", 1).splitlines() if line.startswith("python app.py")]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    folder = tmp_path_factory.mktemp("readme_app")
    (folder / "app.py").write_text(block("python"))
    (folder / "config.yaml").write_text(block("yaml"))
    blocked = folder / "blocked"
    blocked.mkdir()
    for name in ("torch", "sft_sweep", "transformers"):
        (blocked / f"{name}.py").write_text(f"raise ImportError('{name} is not installed here')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocked), os.environ.get("PYTHONPATH", "")]),
           "RAY_ADDRESS": "local"}  # ASHA: a Ray of its own, not one another test started on this machine
    return folder, env


def run(app, name: str, command: list[str]) -> list[dict]:
    folder, env = app
    sweep = folder / name
    proc = subprocess.run([sys.executable, *command[1:], f"hydra.sweep.dir={sweep}"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in (sweep / "trials.jsonl").read_text().splitlines()]


def test_the_readme_has_four_commands():
    assert [c[:3] for c in COMMANDS] == [["python", "app.py", "--multirun"]] * 4


def test_the_app_runs_alone_and_the_package_needs_no_torch(app):
    folder, env = app
    proc = subprocess.run([sys.executable, "app.py"], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    check = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert "torch is not installed here" in check.stderr  # the block works


def test_pruning(app):
    rows = run(app, "pruning", COMMANDS[0])
    assert len(rows) == 12 and {r["status"] for r in rows} <= {"completed", "pruned"}
    pruned = [r for r in rows if r["status"] == "pruned"]
    assert pruned and all(r["steps"] == r["pruned_at_step"] < 20 for r in pruned)
    assert all(r["steps"] == 20 for r in rows if r["status"] == "completed")


def test_grid(app):
    rows = run(app, "grid", COMMANDS[1])
    points = sorted((r["params"]["lr"], r["params"]["width"]) for r in rows)
    assert points == sorted((lr, w) for lr in (0.01, 0.1, 0.3) for w in (1, 4, 16))  # each point once
    results = yaml.safe_load((app[0] / "grid" / "optimization_results.yaml").read_text())
    assert results["best_params"] == {"lr": 0.3, "width": 1}  # the fastest descent


def test_two_objectives(app):
    rows = run(app, "pareto", COMMANDS[2])
    front = yaml.safe_load((app[0] / "pareto" / "optimization_results.yaml").read_text())["solutions"]
    values = [r["value"] for r in rows]

    def dominates(a, b):
        return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))

    assert front and all(not any(dominates(v, s["value"]) for v in values) for s in front)


def test_asha(app):
    pytest.importorskip("ray.tune", reason="the ray extra is not installed")
    rows = run(app, "asha", COMMANDS[3])
    assert len(rows) == 8 and {r["status"] for r in rows} <= {"completed", "stopped"}
    assert any(r["status"] == "stopped" and r["steps"] < 20 for r in rows)
