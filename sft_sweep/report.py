"""Self-contained HTML reports: one file that opens offline (inline SVG charts, no CDN).

    python -m sft_sweep.report dir=outputs/runs/<run>          # -> <run>/report.html
    python -m sft_sweep.report dir=outputs/sweeps/<study>      # -> <sweep dir>/report.html

A run writes its report at the end; a sweep rewrites its report after every finished trial and at
the end (Optuna and ASHA alike). The numbers each page shows are embedded as JSON
(`<script type="application/json" id="report-data">`), for tools and tests.
"""

import json
import logging
import math
import sys
from html import escape
from pathlib import Path

import yaml

from sft_sweep import bench, load_test, plots
from sft_sweep import metric_names as names
from sft_sweep.config import parse_cli_args
from sft_sweep.console import FORGETTING_CAVEAT
from sft_sweep.errors import UserError, one_line_errors
from sft_sweep.run_dir import (
    RunDir,
    SweepDir,
    checkpoints_newest_first,
    is_complete_checkpoint,
    read_json,
    read_jsonl,
    sweep_report_file,
    trial_run,
    write_text,
)
from sft_sweep.status import Status

log = logging.getLogger("sft_sweep")
STATUS_COLORS = {Status.STARTED: "#1f77b4", Status.COMPLETED: "#2a7d2a", Status.PRUNED: "#a65e00",
                 Status.STOPPED: "#a65e00", Status.DIVERGED: "#c00", Status.FAILED: "#c00",
                 Status.INTERRUPTED: "#7f7f7f"}
EVENT_COLORS = {"stop": "#d62728", "early_stop": "#d62728", "rollback": "#ff7f0e", "skip": "#9467bd",
                "warn": "#7f7f7f"}
CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1180px;padding:0 16px;color:#222}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:12px}
.chart{width:100%;height:auto;background:#fff;border:1px solid #e5e5e5}.chart .t{font-size:13px;font-weight:600}
.chart .l{font-size:10px;fill:#555}.chart .box{fill:none;stroke:#ccc}.chart .g{stroke:#eee}
.chart .th{stroke:#c00;stroke-dasharray:6 3}.chart .ax{stroke:#999}
table{border-collapse:collapse;margin:6px 0;font-size:13px}td,th{border:1px solid #ddd;padding:3px 7px;
vertical-align:top;text-align:left}th{background:#f5f5f5}table.sortable th{cursor:pointer}
td.n{text-align:right;font-variant-numeric:tabular-nums}pre{background:#f6f6f6;padding:8px;overflow-x:auto}
.empty{color:#888}.ok{color:#2a7d2a}.bad{color:#c00}.best{background:#fff6d6}.alarm{background:#fde2e2;font-weight:600}
""" + "".join(f".s-{s.value}{{color:{color}}}" for s, color in STATUS_COLORS.items())
JS = """for(const t of document.querySelectorAll('table.sortable')){t.querySelectorAll('th').forEach((th,i)=>{
th.addEventListener('click',()=>{const rows=[...t.tBodies[0].rows],asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';
const key=r=>{const c=r.cells[i],v=c.dataset.v!==undefined?c.dataset.v:c.textContent,n=parseFloat(v);
return isNaN(n)?v:n};rows.sort((a,b)=>{const x=key(a),y=key(b);if(typeof x!==typeof y)return typeof x==='number'?-1:1;
return(x<y?-1:x>y?1:0)*(asc?1:-1)});rows.forEach(r=>t.tBodies[0].appendChild(r))})})}
document.body.dataset.ready='1';"""


# --- a run -----------------------------------------------------------------------------------------
def run_history(run: RunDir) -> list[dict]:
    """Every logged record: the finished run's, else its newest complete checkpoint's (a killed run)."""
    if run.log_history.is_file():
        return read_json(run.log_history)
    newest = next((c for c in checkpoints_newest_first(run.checkpoints) if is_complete_checkpoint(c)), None)
    return read_json(newest / "trainer_state.json")["log_history"] if newest else []


def series(history: list[dict], key: str) -> list[list[float]]:
    return [[h["step"], h[key]] for h in history if key in h and plots.finite(h[key])]


def scored_samples(run: RunDir, limit: int = 24) -> list[dict]:
    """The first scored answers, with the scores they were given when generated."""
    keep = ("kind", "prompt", "reference", "prediction", *names.SAMPLE_SCORES)
    return [{k: s.get(k) for k in keep} for s in read_jsonl(run.eval_samples)[:limit]]


def run_data(run: RunDir) -> dict:
    manifest = read_json(run.manifest) if run.manifest.is_file() else {}
    config = manifest.get("config") or {}
    metrics = run.read_metrics() if run.finished else {}
    history = run_history(run)
    return {"kind": "run", "name": run.path.name, "status": manifest.get("status"),
            "error": manifest.get("error"), "optimized_metric": config.get("optimized_metric"),
            "train_loss": series(history, "loss"), names.EVAL_LOSS: series(history, names.EVAL_LOSS),
            "learning_rate": series(history, "learning_rate"), "grad_norm": series(history, "grad_norm"),
            "tokens_per_s": series(history, "tokens_per_s"),
            "grad_norm_threshold": (config.get("monitor") or {}).get("grad_norm_threshold"),
            "events": read_jsonl(run.monitor_events), "metrics": metrics, "probes": metrics.get(names.PROBES) or [],
            "samples": scored_samples(run), "commands": run.commands(),
            "benchmarks": bench.table(read_json(run.benchmarks)) if run.benchmarks.is_file() else [],
            "load_test": read_json(run.load_test) if run.load_test.is_file() else None}


def run_report(run: RunDir) -> Path:
    d = run_data(run)
    marks = [{"x": e["step"], "label": f"{e['kind']} → {e['action']}", "color": EVENT_COLORS.get(e["action"], "#777")}
             for e in d["events"]]
    m = d["metrics"]
    charts = [
        plots.line_chart([{"name": "train loss", "points": d["train_loss"]},
                          {"name": "eval loss", "points": d[names.EVAL_LOSS]}], "loss", y_label="loss", marks=marks),
        plots.line_chart([{"name": "grad norm", "points": d["grad_norm"]}], "gradient norm", log_y=True,
                         hlines=[(d["grad_norm_threshold"], "monitor threshold")] if d["grad_norm_threshold"] else [],
                         marks=marks),
        plots.line_chart([{"name": "learning rate", "points": d["learning_rate"]}], "learning-rate schedule"),
        plots.line_chart([{"name": "tokens/s", "points": d["tokens_per_s"]}], "throughput (tokens/s)"),
    ]
    by_kind, by_kind_before = m.get(names.EXACT_MATCH_BY_TAG) or {}, m.get(names.before(names.EXACT_MATCH_BY_TAG)) or {}
    status = Status(d["status"]) if d["status"] else None
    summary = [("status", (status.label if status else "unknown") + (f" — {d['error']}" if d["error"] else "")),
               ("steps", m.get(names.GLOBAL_STEP)),
               ("eval loss first → last", arrow(m.get(names.FIRST_EVAL_LOSS), m.get(names.EVAL_LOSS))),
               ("exact match before → after", before_after(m, names.EXACT_MATCH)),
               *((f"exact match: {kind}", arrow(by_kind_before.get(kind), value)) for kind, value in by_kind.items()),
               ("JSON validity before → after", before_after(m, names.JSON_VALIDITY)),
               ("answer diversity", num(m.get(names.ANSWER_DIVERSITY)) + (
                   f" — COLLAPSED: {m[names.DISTINCT_ANSWERS]} distinct answers to {m[names.DISTINCT_REFERENCES]} "
                   f"references" if m.get(names.COLLAPSED_ANSWERS) else "")),
               ("general-chat perplexity before → after", before_after(m, names.GENERAL_PERPLEXITY)),
               ("forgetting delta", num(m.get(names.FORGETTING_DELTA)) + (
                   FORGETTING_CAVEAT if m.get(names.RANDOM_INIT) and names.FORGETTING_DELTA in m else "")),
               ("tokens/s", num(m.get(names.TOKENS_PER_S))), ("peak memory (MiB)", peak(m.get(names.PEAK_MEMORY))),
               ("monitor events", len(d["events"]))]
    scalars = {k: v for k, v in m.items() if k.startswith("eval_") and isinstance(v, (int, float))}
    alarm = {i for i, (k, _) in enumerate(summary) if k == "answer diversity" and m.get(names.COLLAPSED_ANSWERS)}
    body = [f"<h1>run {escape(d['name'])}</h1>", table(None, [list(r) for r in summary], alarm_rows=alarm),
            '<div class="grid">', *charts, "</div>",
            "<h2>monitor events</h2>", table(["step", "kind", "action", "values", "note"],
                                             [[e["step"], e["kind"], e["action"], json.dumps(e["values"]),
                                               e.get("note", "")] for e in d["events"]]) if d["events"]
            else "<p class='empty'>none</p>",
            "<h2>probes before / after training</h2>",
            table(["probe", "before training", "after training"], [[p["probe"], p["before"], p["after"]]
                                                                    for p in d["probes"]]),
            "<h2>evaluation</h2>", kv_table([(k, num(v)) for k, v in sorted(scalars.items())]),
            *(["<h2>benchmarks (lm-evaluation-harness)</h2>",
               table(bench.TABLE_COLUMNS, [[task, metric, num(b), num(a), num(e)] for task, metric, b, a, e
                                           in d["benchmarks"]])] if d["benchmarks"] else []),
            *([f"<h2>serving load test ({escape(d['load_test']['engine'])}, GuideLLM "
               f"{escape(d['load_test']['guidellm'])})</h2>",
               table(load_test.COLUMNS, [[num(r[c]) for c in load_test.COLUMNS] for r in d["load_test"]["rows"]])]
              if d["load_test"] else []),
            "<h2>sample of scored answers</h2>",
            table(["kind", "prompt", "reference", "answer", "exact match", "JSON", "usable answer"],
                  [[s["kind"], s["prompt"], s["reference"], s["prediction"], mark(s[names.EXACT]),
                    mark(s[names.JSON_VALID]), mark(s[names.USABLE])] for s in d["samples"]], sortable=True),
            "<h2>commands</h2>", "<pre>" + escape("\n".join(f"# {k}\n{v}" for k, v in d["commands"].items() if v))
            + "</pre>"]
    return write_page(run.report, f"sft-sweep run {d['name']}", body, d)


# --- a sweep ---------------------------------------------------------------------------------------
def sweep_settings(sweep: SweepDir) -> dict:
    """Metric, direction and searched keys, as the sweeper wrote them when the sweep began."""
    if not sweep.settings.is_file():
        raise UserError(f"{sweep.settings} not found: is {sweep.path} a sweep dir?")
    s = yaml.safe_load(sweep.settings.read_text(encoding="utf-8"))
    metrics = s["metric"] if isinstance(s["metric"], list) else [s["metric"]]
    directions = s["direction"] if isinstance(s["direction"], list) else [s["direction"]]
    # curves, ranks and importances follow the first objective; several objectives also get their Pareto front
    return {**s, "metric": metrics[0], "metrics": metrics, "directions": directions,
            "minimize": directions[0] == "minimize"}


def last_attempt(curve: list) -> list:
    """A trial restarted from scratch (an ASHA trial whose sweep was resumed) reports its steps again:
    its curve is the newest attempt's."""
    start = 0
    for i in range(1, len(curve)):
        if curve[i][0] <= curve[i - 1][0]:
            start = i
    return curve[start:]


def trial_curve(run: RunDir, metric: str, history: list[dict] | None = None) -> list[list[float]]:
    """A trial's [step, metric] at every evaluation: from its logged history (`history`, if already read),
    else (an ASHA trial killed when stopped) from its reports to Ray Tune."""
    if history is None:
        history = run_history(run) if run.path.is_dir() else []
    return series(history, metric) or last_attempt([[r["step"], r[metric]] for r in read_jsonl(run.tune_progress)
                                                    if plots.finite(r.get(metric))])


def trial_params(run: RunDir, keys: list[str]) -> dict:
    params = {}
    for override in run.overrides() if run.hydra_overrides.is_file() else []:
        key, _, value = override.partition("=")
        if key in keys:
            params[key] = yaml.safe_load(value)
    return params


def sweep_data(sweep: SweepDir, importances: bool = True) -> dict:
    """The sweep page's numbers. `importances=False` leaves out the fANOVA parameter importances (a random forest
    fitted anew each time: the per-trial rewrites skip it, the sweep's final report has it)."""
    s = sweep_settings(sweep)
    metric, best_of = s["metric"], (min if s["minimize"] else max)
    records = sweep.trial_rows()  # a resumed trial's newest row wins
    # trials still running have a run dir (a manifest) but no row yet
    numbers = sorted({int(p.parent.name) for p in sweep.path.glob("*/run_manifest.json") if p.parent.name.isdigit()}
                     | set(records))
    trials = []
    for n in numbers:
        run, rec = trial_run(sweep, n), records.get(n, {})
        manifest = read_json(run.manifest) if run.manifest.is_file() else {}
        history = run_history(run) if run.path.is_dir() else []
        curve = trial_curve(run, metric, history)
        metrics = run.read_metrics() if run.finished else {}
        status = Status(rec.get("status") or manifest.get("status") or Status.STARTED)
        values = rec.get("value") if isinstance(rec.get("value"), list) else None  # one per objective
        value = values[0] if values else rec.get("value") if plots.finite(rec.get("value")) else metrics.get(metric)
        trials.append({"trial": n, "status": status, "params": rec.get("params") or trial_params(run, s["params"]),
                       "steps": rec.get("steps") or metrics.get(names.GLOBAL_STEP) or (curve[-1][0] if curve else None),
                       "best": best_of(v for _, v in curve) if curve else None,
                       "value": value if status == Status.COMPLETED else None, "curve": curve,
                       "values": values if status == Status.COMPLETED else None,
                       "report": f"{run.path.name}/report.html" if run.report.is_file() else None,
                       "command": manifest.get("command"), "reason": rec.get("reason") or manifest.get("error"),
                       "benchmarks": {k: v for k, v in metrics.items() if k.startswith(names.BENCH_PREFIX)}})
    for t in trials:  # what the trial is ranked by: its final value, else (ASHA) its best report
        t["score"] = t["value"] if t["value"] is not None else t["best"] if t["status"] == Status.COMPLETED else None
    scored = [t for t in trials if t["score"] is not None]
    best = best_of(scored, key=lambda t: t["score"]) if scored else None
    if sweep.results.is_file():  # the sweeper's own verdict, once it has one (ASHA may pick a stopped trial)
        results = yaml.safe_load(sweep.results.read_text(encoding="utf-8")) or {}
        best = next((t for t in trials if t["trial"] == results.get("best_trial")), best)
        if best is not None and results.get("best_value") is not None:
            best = {**best, "score": results["best_value"]}
    front = []
    if len(s["metrics"]) > 1 and sweep.results.is_file():
        front = [row["trial"] for row in (yaml.safe_load(sweep.results.read_text(encoding="utf-8")) or {}).get(
            "solutions", [])]
    return {"kind": "sweep", "name": sweep.path.name, "sweeper": s["sweeper"], "metric": metric,
            "metrics": s["metrics"], "directions": s["directions"], "pareto_front": front,
            "direction": "minimize" if s["minimize"] else "maximize", "params": s["params"],
            "early_stopping": s.get("early_stopping"), "trials": trials,
            "counts": {st: sum(t["status"] == st for t in trials) for st in sorted({t["status"] for t in trials})},
            "best_trial": best["trial"] if best else None, "best_value": best["score"] if best else None,
            "best_command": best["command"] if best else None,
            "importance": importance(scored, s["minimize"]) if importances else {}}


def importance(scored: list[dict], minimize: bool) -> dict:
    """Optuna's parameter importances (fANOVA) over the scored trials; {} with fewer than 3, or when they all scored
    the same (nothing to explain: fANOVA would divide by a zero variance)."""
    if len(scored) < 3 or len({t["score"] for t in scored}) < 2:
        return {}
    import optuna

    keys = sorted({k for t in scored for k in t["params"]})
    dists = {}
    for k in keys:
        values = [t["params"].get(k) for t in scored]
        if all(plots.finite(v) for v in values):
            lo, hi = min(values), max(values)
            if lo == hi:
                continue
            log = lo > 0 and hi / lo > 20
            dists[k] = (optuna.distributions.IntDistribution(lo, hi, log=log) if all(isinstance(v, int) for v in values)
                        else optuna.distributions.FloatDistribution(lo, hi, log=log))
        elif len({json.dumps(v) for v in values}) > 1:
            dists[k] = optuna.distributions.CategoricalDistribution(sorted({json.dumps(v) for v in values}))
    if not dists:
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize" if minimize else "maximize")
    for t in scored:
        params = {k: json.dumps(t["params"][k]) if isinstance(d, optuna.distributions.CategoricalDistribution)
                  else t["params"][k] for k, d in dists.items()}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=t["score"]))
    return dict(optuna.importance.get_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(
        seed=0)))


def sweep_report(sweep: SweepDir, importances: bool = True) -> Path:
    d = sweep_data(sweep, importances)
    metric, trials, params = d["metric"], d["trials"], d["params"]
    curves = [{"name": f"trial {t['trial']} ({t['status'].label})", "points": t["curve"],
               "dashed": t["status"] != Status.COMPLETED, "end_mark": t["status"].cut_short}
              for t in trials if t["curve"]]
    scored = [{"trial": t["trial"], **t["params"], metric: t["score"]} for t in trials if t["score"] is not None]
    per_param = []
    for p in params:
        values = [t["params"].get(p) for t in trials if t["score"] is not None]
        numeric = all(plots.finite(v) for v in values)
        per_param.append(plots.scatter(
            [(t["params"].get(p) if numeric else str(t["params"].get(p)), t["score"], f"trial {t['trial']}")
             for t in trials if t["score"] is not None], f"{metric} vs {p}", p, metric,
            categories=None if numeric else sorted({str(v) for v in values}),
            log_x=numeric and bool(values) and min(values) > 0 and max(values) / min(values) > 20,
            highlight=f"trial {d['best_trial']}"))
    benchmarks = sorted({name for t in trials for name in t["benchmarks"]})  # each trial's standard benchmarks
    rows = [[t["trial"], t["status"], t["steps"], num(t["best"]), num(t["value"]),
             *[num(t["benchmarks"].get(b)) for b in benchmarks], *[t["params"].get(p) for p in params],
             f'<a href="{escape(t["report"])}">report</a>' if t["report"] else "",
             t["reason"] if (t["status"].failed or t["status"] == Status.INTERRUPTED) and t["reason"] else ""]
            for t in trials]
    best_line = (f"best {metric} {num(d['best_value'])} (trial {d['best_trial']})" if d["best_trial"] is not None
                 else "no trial finished yet")
    stopping = d["early_stopping"] or {}
    stopping_line = (f"early stopping: {stopping['_target_'].rsplit('.', 1)[-1]}("
                     f"{', '.join(f'{k}={v}' for k, v in stopping.items() if k != '_target_')})" if stopping else "")
    body = [f"<h1>sweep {escape(d['name'])}</h1>",
            f"<p>{escape(d['sweeper'])}, {escape(d['direction'])} {escape(metric)}: {len(trials)} trials "
            f"({', '.join(f'{v} {escape(Status(k).label)}' for k, v in d['counts'].items())}); {escape(best_line)}</p>",
            f"<p>{escape(stopping_line)}</p>" if stopping else "",
            "<h2>trials</h2>",
            table(["trial", "status", "steps", f"best {metric}", f"final {metric}", *benchmarks, *params, "run report",
                   "note"], rows, sortable=True, raw_columns={5 + len(benchmarks) + len(params)},
                  highlight=d["best_trial"]),
            '<div class="grid">',
            plots.line_chart(curves, f"{metric} of every trial (dashed: cut short)", y_label=metric),
            *([plots.pareto([(t["values"][0], t["values"][1], f"trial {t['trial']}") for t in trials if t["values"]],
                            [f"trial {n}" for n in d["pareto_front"]], d["metrics"][0], d["metrics"][1],
                            d["directions"][:2])] if len(d["metrics"]) > 1 else []),
            plots.parallel(scored, params + [metric], metric, "parallel coordinates",
                           lower_is_better=d["direction"] == "minimize"),
            plots.bars(sorted(d["importance"].items(), key=lambda kv: -kv[1]), "parameter importance (fANOVA)"),
            *per_param, "</div>",
            "<h2>reproduce the best trial</h2>", f"<pre>{escape(d['best_command'] or '-')}</pre>"]
    return write_page(sweep_report_file(sweep), f"sft-sweep sweep {d['name']}", body, d)


# --- HTML ------------------------------------------------------------------------------------------
def num(v) -> str:
    if isinstance(v, bool) or v is None:
        return "-" if v is None else str(v)
    if isinstance(v, float):
        return "nan" if not math.isfinite(v) else f"{v:.4g}"
    return str(v)


def arrow(a, b) -> str:
    return f"{num(a)} → {num(b)}" if a is not None or b is not None else "-"


def peak(p) -> str:
    return ", ".join(f"{k.removesuffix('_mib')} {v:,.0f}" for k, v in (p or {}).items()) or "-"


def mark(ok: bool | None) -> str:
    """A score's mark: ✓ / ✗, or - where it does not apply (a JSON score of a reference that is not JSON)."""
    return "-" if ok is None else "✓" if ok else "✗"


def before_after(metrics: dict, name: str) -> str:
    return arrow(metrics.get(names.before(name)), metrics.get(name))


def cell(v, raw: bool = False) -> str:
    """A table cell; a Status shows its label in its colour (and sorts by its value)."""
    if isinstance(v, Status):
        return f'<td class="s-{v.value}" data-v="{v.value}">{escape(v.label)}</td>'
    text = v if raw else escape(num(v) if not isinstance(v, str) else v)
    attr = f' data-v="{escape(str(v))}" class="n"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
    return f"<td{attr}>{text}</td>"


def table(header: list[str] | None, rows: list[list], sortable: bool = False, raw_columns=(), highlight=None,
          alarm_rows=()) -> str:
    if not rows:
        return "<p class='empty'>none</p>"
    head = f"<thead><tr>{''.join(f'<th>{escape(h)}</th>' for h in header)}</tr></thead>" if header else ""

    def row_class(i, r):
        if i in alarm_rows:
            return " class=alarm"
        return " class=best" if highlight is not None and r[0] == highlight else ""

    body = "".join(f"<tr{row_class(i, r)}>" + "".join(cell(v, j in raw_columns) for j, v in enumerate(r)) + "</tr>"
                   for i, r in enumerate(rows))
    return f"<table{' class=sortable' if sortable else ''}>{head}<tbody>{body}</tbody></table>"


def kv_table(items: list[tuple]) -> str:
    return table(None, [[k, v] for k, v in items])


def finite_only(v):
    """JSON has no NaN/Infinity: they become null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: finite_only(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [finite_only(x) for x in v]
    return v


def write_page(path: Path, title: str, body: list[str], data: dict) -> Path:
    embedded = json.dumps(finite_only(data), ensure_ascii=False, default=str).replace("</", "<\\/")
    html = (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title><style>{CSS}</style>"
            f"</head><body>{''.join(body)}<script type='application/json' id='report-data'>{embedded}</script>"
            f"<script>{JS}</script></body></html>")
    write_text(path, html)
    return path


def write_report(path, importances: bool = True) -> Path:
    """The report of a run dir or a sweep dir (a sweep's with its parameter importances, unless told not to)."""
    path = Path(path)
    if RunDir(path).manifest.is_file():
        return run_report(RunDir(path))
    if SweepDir(path).settings.is_file():
        return sweep_report(SweepDir(path), importances)
    raise UserError(f"{path} is neither a run dir (no run_manifest.json) nor a sweep dir (no sweep.yaml)")


def refresh_sweep(sweep_dir: str, final: bool) -> None:
    """The sweepers' `on_record` hook (conf/hparams_search presets): the sweep's report.html after each trial's
    record, and with the sweeper's verdict and the parameter importances once its results are written (final)."""
    refresh(sweep_dir, importances=final)


def refresh(path, importances: bool = True) -> Path | None:
    """(Re)write the report of a run or sweep whose records are already safe: a report that cannot be
    written warns (with the command to retry) and never fails the run or the sweep."""
    try:
        return write_report(path, importances)
    except Exception as exc:  # noqa: BLE001 -- the report is a view of the records
        log.warning("report: could not write %s/report.html (%s: %s); retry with python -m sft_sweep.report dir=%s",
                    path, type(exc).__name__, exc, path)
        return None


@one_line_errors
def main(argv: list[str]) -> int:
    args = parse_cli_args(argv, __doc__, ("dir",), {})
    print(write_report(args["dir"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
