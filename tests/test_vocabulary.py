"""One owner per concept: each run/trial status word is spelled only in sft_sweep/status.py and each metric name
only in sft_sweep/metric_names.py; everything else refers to them (so a rename cannot leave a reader behind)."""

import ast
from pathlib import Path

from sft_sweep import metric_names
from sft_sweep.status import Status

REPO = Path(__file__).resolve().parents[1]
CODE = [*REPO.glob("sft_sweep/**/*.py"), *REPO.glob("hydra_plugins/**/*.py")]
# Words that were status words once, and must not come back as a second spelling.
OLD_STATUS_WORDS = {"finished", "complete", "stopped early", "running"}
# Metric names that are also config keys of the same spelling (eval.probes, the monitor group, trainer.on_oom).
ALSO_CONFIG_KEYS = {metric_names.PROBES, metric_names.MONITOR, metric_names.OOM}


def literals(path: Path) -> list[tuple[int, str]]:
    return [(node.lineno, node.value) for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_status_words_are_spelled_once():
    words = {s.value for s in Status} | OLD_STATUS_WORDS
    found = [(p.relative_to(REPO), line, text) for p in CODE if p.name != "status.py"
             for line, text in literals(p) if text in words]
    assert found == []


def test_metric_names_are_spelled_once():
    names = {v for k, v in vars(metric_names).items() if k.isupper() and isinstance(v, str)} - ALSO_CONFIG_KEYS
    found = [(p.relative_to(REPO), line, text) for p in CODE if p.name not in ("metric_names.py", "status.py")
             for line, text in literals(p) if text in names]
    assert found == []


def test_no_monkeypatched_training_step():
    """The training loop's additions live in the trainer subclass (sft_sweep/trainer.py), not in assignments."""
    assigned = [(p.relative_to(REPO), node.lineno) for p in CODE for node in ast.walk(ast.parse(p.read_text()))
                if isinstance(node, ast.Assign) and any(isinstance(t, ast.Attribute) and t.attr == "training_step"
                                                        for t in node.targets)]
    assert assigned == []
