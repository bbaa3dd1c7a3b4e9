"""Reports and console output of a real run: the HTML's embedded numbers equal the run's records, the page
renders in headless Chromium without JavaScript errors, the console shows compact lines and a summary."""

import io
import json
import re
from types import SimpleNamespace

import pytest
import yaml

from sft_sweep.callbacks import ConsoleProgress
from sft_sweep.report import main as report_main
from tests.helpers import embedded, read, render_in_chromium


def schedule(run_dir) -> tuple[list[int], list[int]]:
    """The steps a run logged at and evaluated at, from its config: every logging_steps, and from step 0 every
    eval_steps (the last step too)."""
    trainer = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())["trainer"]
    steps, logging, evaluation = trainer["max_steps"], trainer["logging_steps"], trainer["eval_steps"]
    evaluated = list(range(0, steps + 1, evaluation))
    return list(range(logging, steps + 1, logging)), evaluated + ([steps] if evaluated[-1] != steps else [])


@pytest.mark.slow
def test_run_report_holds_the_runs_curves_events_probes_and_answers(tiny_run):
    data = embedded(tiny_run / "report.html")
    history, metrics = read(tiny_run / "log_history.json"), read(tiny_run / "metrics.json")
    assert data["status"] == "completed"
    assert data["train_loss"] == [[h["step"], h["loss"]] for h in history if "loss" in h]
    logged, evaluated = schedule(tiny_run)
    assert [s for s, _ in data["train_loss"]] == logged
    assert data["eval_loss"] == [[h["step"], h["eval_loss"]] for h in history if "eval_loss" in h]
    assert [s for s, _ in data["eval_loss"]] == evaluated
    assert [s for s, _ in data["tokens_per_s"]] == logged and all(v > 0 for _, v in data["tokens_per_s"])
    assert len(data["learning_rate"]) == len(logged) and data["grad_norm_threshold"] == 0.5
    events = [json.loads(line) for line in (tiny_run / "monitor_events.jsonl").read_text().splitlines()]
    assert len(events) >= 1 and data["events"] == events
    html = (tiny_run / "report.html").read_text(encoding="utf-8")
    assert html.count("<title>grad_explosion → warn</title>") == 2 * len(events)  # marked on loss and grad charts
    assert [p["probe"] for p in data["probes"]][0] == metrics["probes"][0]["probe"] and len(data["probes"]) == 5
    assert all(p["before"] and isinstance(p["after"], str) for p in data["probes"])  # 12 steps: may be empty
    samples = [json.loads(line) for line in (tiny_run / "eval_samples.jsonl").read_text().splitlines()]
    assert [s["prediction"] for s in data["samples"]] == [s["prediction"] for s in samples[:24]]
    assert sum(s["exact"] for s in data["samples"]) == sum(
        s["prediction"].strip() == s["reference"].strip() for s in samples[:24])
    assert data["metrics"]["eval_loss"] == metrics["eval_loss"]
    assert data["commands"]["chat"] == f"python -m sft_sweep.chat run_dir={tiny_run}"
    # self-contained and small: no external resources, well under a message attachment's size
    assert not re.search(r"""(src|href)=["']?https?:""", html) and len(html.encode()) < 300_000


@pytest.mark.slow
def test_run_report_renders_in_chromium_without_errors(tiny_run, tmp_path):
    dom = render_in_chromium(tiny_run / "report.html", tmp_path / "run.png")
    assert 'data-ready="1"' in dom and dom.count("<svg") == 4
    assert (tmp_path / "run.png").stat().st_size > 20_000


@pytest.mark.slow
def test_console_prints_compact_lines_and_a_summary_not_raw_dicts(tiny_run):
    log = (tiny_run / "train.log").read_text(encoding="utf-8")
    assert "{'loss'" not in log
    logged, evaluated = schedule(tiny_run)
    steps = re.findall(rf"step (\d+)/{logged[-1]}  loss [\d.]+  lr [\d.e+-]+  grad [\d.e+-]+  tok/s [\d,]+  "
                       rf"eta \d+m\d\ds", log)
    assert steps == [str(s) for s in logged]
    assert re.findall(r"eval at step (\d+): loss [\d.]+", log) == [str(s) for s in evaluated]
    metrics = read(tiny_run / "metrics.json")
    assert re.search(rf"eval loss first -> last +{metrics['first_eval_loss']:.4f} -> {metrics['eval_loss']:.4f}", log)
    assert re.search(rf"chat +python -m sft_sweep.chat run_dir={re.escape(str(tiny_run))}", log)
    assert re.search(r"monitor events +grad_explosion \d+", log)


def test_progress_bar_on_a_terminal_shows_loss_lr_and_tokens_per_second(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    bar = ConsoleProgress(tty=True)
    state = SimpleNamespace(global_step=0, max_steps=4, num_input_tokens_seen=0, is_world_process_zero=True,
                            log_history=[])
    bar.on_train_begin(None, state, None)
    for step in (1, 2):
        state.global_step, state.num_input_tokens_seen = step, 1000 * step
        bar.on_step_end(None, state, None)
    state.log_history.append({"loss": 1.25, "learning_rate": 3e-4, "grad_norm": 0.5, "step": 2})
    bar.on_log(None, state, None, logs={"loss": 1.25, "learning_rate": 3e-4, "grad_norm": 0.5})
    bar.on_log(None, state, None, logs={"eval_loss": 0.75, "eval_runtime": 1.0})
    bar.on_train_end(None, state, None)
    out = err.getvalue()
    assert "2/4" in out and "loss=1.2500" in out and "lr=3.00e-04" in out and "tok/s=" in out
    assert "eval at step 2: loss 0.7500" in out
    assert state.log_history[-1]["tokens_per_s"] > 0  # the shown throughput is also recorded


def test_report_cli_names_a_dir_that_is_neither_run_nor_sweep(tmp_path, capsys):
    assert report_main([f"dir={tmp_path}"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {tmp_path} is neither a run dir (no run_manifest.json) "
                                               f"nor a sweep dir (no sweep.yaml)")


def test_parameter_importances_need_scores_that_differ():
    """Trials that all scored the same (a benchmark every trial fails) leave nothing to explain: no importances,
    and the sweep page is still written (fANOVA would divide by the scores' zero variance)."""
    from sft_sweep.report import importance

    trials = [{"params": {"optim.learning_rate": lr, "lora.r": r}, "score": 0.0}
              for lr, r in ((1e-4, 8), (3e-4, 16), (1e-3, 32))]
    assert importance(trials, minimize=False) == {}
    trials[0]["score"] = 0.5
    found = importance(trials, minimize=False)
    assert set(found) == {"optim.learning_rate", "lora.r"} and sum(found.values()) == pytest.approx(1)
