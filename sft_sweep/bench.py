"""Standard benchmarks -- GSM8K, MMLU, IFEval, C-Eval, any task of EleutherAI's lm-evaluation-harness -- run by
lm-eval itself on the model in this process, with the run's chat template settings and greedy decoding
(eval.benchmarks, eval.benchmarks_before, eval.benchmarks_limit, eval.benchmarks_args: conf/eval/default.yaml).
No benchmark logic of our own: lm-eval's tasks, prompts, filters and metrics.

One task is ours, `sft_sweep_arith` (LOCAL_TASK): 40 arithmetic questions of the sample data (English and Chinese,
the last of that kind in assets/sample/chat.jsonl), answered in a number, scored by exact match and chrF -- in lm-eval's
YAML task format, written beside its data into the data cache (the YAML names its data file by absolute path),
so that it runs with no network. The embedded default trains on the sample data: on it the task measures
fitting, not generalization; it is there to run lm-eval end to end here and in the tests.

A task's scores are named bench_<task>_<metric> (metric_names.bench), the base model's before_bench_...
"""

import contextlib
import difflib
import functools
import hashlib
import json
import os
from pathlib import Path

import yaml

from sft_sweep import metric_names as names
from sft_sweep.config import asset_path
from sft_sweep.console import verbose
from sft_sweep.errors import UserError
from sft_sweep.run_dir import write_text

LOCAL_TASK = "sft_sweep_arith"
LOCAL_ROWS = 40


def local_tasks_dir(cache_dir: str | None = None) -> Path:
    """The folder of our local task (its YAML and data), written into the data cache (again where it differs)."""
    folder = Path(cache_dir or os.environ.get("SFT_SWEEP_CACHE", "outputs/cache")).resolve() / "lm_eval_tasks"
    rows = [json.loads(line) for line in Path(asset_path("sample/chat.jsonl")).read_text(encoding="utf-8")
            .splitlines()]
    arithmetic = [r for r in rows if "arithmetic" in r.get("tags", []) and len(r["messages"]) == 2][-LOCAL_ROWS:]
    data = folder / f"{LOCAL_TASK}.jsonl"
    files = {data: "".join(json.dumps({"question": r["messages"][0]["content"], "answer": r["messages"][1]["content"]},
                                      ensure_ascii=False) + "\n" for r in arithmetic),
             folder / f"{LOCAL_TASK}.yaml": yaml.safe_dump({
                 "task": LOCAL_TASK, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
                 "test_split": "test", "output_type": "generate_until", "doc_to_text": "{{question}}",
                 "doc_to_target": "{{answer}}", "generation_kwargs": {"until": [], "do_sample": False,
                                                                      "max_gen_toks": 16},
                 # exact match, and chrF: lm-eval's character n-gram F-score (sacrebleu), partial credit for a near
                 # answer ("1234" for "1243"), so that a model that gets none exactly right is still ranked
                 "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                                  "ignore_case": True, "ignore_punctuation": False},
                                 {"metric": "chrf", "aggregation": "chrf", "higher_is_better": True}],
                 "num_fewshot": 0, "metadata": {"version": 2.0}}, sort_keys=False, allow_unicode=True)}
    folder.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            write_text(path, text)  # atomic: two processes may write it at once
    return folder


def task_manager(tasks: list[str], cache_dir: str | None = None):
    """lm-eval's index of the tasks it can run: our local task, and lm-eval's own unless only ours are asked for
    (indexing lm-eval's thousands of task files takes 6-20 s, in each process that makes one)."""
    return _task_manager(str(local_tasks_dir(cache_dir)), not set(tasks) <= {LOCAL_TASK})


@functools.cache  # once a process
def _task_manager(include_path: str, include_defaults: bool):
    from lm_eval.tasks import TaskManager  # deferred: lm-eval (and its task index) only when benchmarks run

    return TaskManager(include_path=include_path, include_defaults=include_defaults)


def check(tasks: list[str], cache_dir: str | None = None) -> None:
    """Before training: each task is lm-eval's (or one of its groups), and its data loads from here -- one line
    otherwise, naming the closest tasks, or how to get the data."""
    if not tasks:
        return
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise UserError("eval.benchmarks needs lm-evaluation-harness: pip install 'sft-sweep[bench]'") from None
    from lm_eval.tasks import get_task_dict

    manager = task_manager(tasks, cache_dir)
    known = set(manager.all_subtasks) | set(manager.all_groups) | set(manager.all_tags)
    for task in tasks:
        if task not in known:
            close = difflib.get_close_matches(task, sorted(known), n=3, cutoff=0.6)
            raise UserError(f"eval.benchmarks: no lm-eval task {task!r}"
                            + (f" (closest: {', '.join(close)})" if close else ""))
        try:
            get_task_dict([task], manager)  # builds the task: its data is downloaded or read from the cache
        except Exception as exc:  # noqa: BLE001 -- the hub unreachable, the data not cached: one line
            raise UserError(f"eval.benchmarks: task {task!r} cannot load its data here ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}); run it once where the hub is "
                            f"reachable, so the data is in the datasets cache (HF_DATASETS_CACHE), then run "
                            f"offline") from None


def run(model, tokenizer, cfg: dict, template_kwargs: dict, cache_dir: str | None = None) -> dict:
    """lm-eval's simple_evaluate on `model` (in this process): the chat template with `template_kwargs`, greedy,
    eval.benchmarks_limit documents per task, eval.benchmarks_args passed on. Returns {"results": {task: {metric:
    {"value", "stderr"}}}, "lm_eval": version, "configs": {task: sha256 of its config}, "samples": [each document's
    answer and scores]}."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PeftModel: its adapters stay
    args = dict(cfg.get("benchmarks_args") or {})
    lm = HFLM(pretrained=base, tokenizer=tokenizer, batch_size=args.pop("batch_size", cfg["batch_size"]),
              chat_template_args=template_kwargs)
    was_training = model.training
    model.eval()
    # lm-eval's progress bars: shown as the console shows ours. DISABLE_MULTIPROC: lm-eval's own switch for the
    # bootstrap of corpus-level metrics' stderr (chrF, BLEU, F1), which otherwise forks a process pool from this
    # process; its torch and W&B threads may hold a lock at the fork, and a child then waits forever (seen here).
    try:
        with environ(TQDM_DISABLE=os.environ.get("TQDM_DISABLE") or ("" if verbose() else "1"), DISABLE_MULTIPROC="1"):
            out = lm_eval.simple_evaluate(model=lm, tasks=list(cfg["benchmarks"]),
                                          limit=cfg.get("benchmarks_limit"), apply_chat_template=True,
                                          task_manager=task_manager(cfg["benchmarks"], cache_dir),
                                          gen_kwargs={"do_sample": False}, log_samples=True, **args)
    finally:
        model.train(was_training)
    results = {}
    for task, values in out["results"].items():
        scores = {}
        for key, value in values.items():
            metric, _, filter_name = key.partition(",")
            if not filter_name or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            name = metric if filter_name == "none" else f"{metric}_{filter_name}"
            stderr = values.get(f"{metric}_stderr,{filter_name}")
            scores[name] = {"value": float(value), "stderr": float(stderr) if isinstance(stderr, (int, float))
                            else None}
        results[task] = scores
    configs = {task: hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]
               for task, config in out.get("configs", {}).items()}
    samples = [{"task": task, "doc_id": s["doc_id"], "target": s["target"],
                "response": s["filtered_resps"][0] if s["filtered_resps"] else None,
                **{k: s[k] for k in scores_of(s)}} for task, rows in out.get("samples", {}).items() for s in rows]
    return {"results": results, "lm_eval": lm_eval.__version__, "configs": configs, "samples": samples}


@contextlib.contextmanager
def environ(**values: str):
    """These environment variables set for the block, then as they were."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def scores_of(sample: dict) -> list[str]:
    """The per-document scores lm-eval put on one logged sample (exact_match, acc, ...; it lists its metrics under
    "metrics"); a corpus-level metric's item (chrF's [reference, answer]) is no score of its own."""
    return [k for k in sample.get("metrics", []) if isinstance(sample.get(k), (int, float))]


def table(records: dict) -> list[list]:
    """benchmarks.json as rows [task, metric, before, after, stderr after] (the report's table, W&B's)."""
    after, before = records["after"]["results"], (records.get("before") or {}).get("results") or {}
    return [[task, metric, (before.get(task) or {}).get(metric, {}).get("value"), score["value"], score["stderr"]]
            for task, scores in after.items() for metric, score in scores.items()]


TABLE_COLUMNS = ["task", "metric", "before", "after", "stderr"]


def metrics(benchmarks: dict) -> dict:
    """{bench_<task>_<metric>: value} of run()'s results."""
    return {names.bench(task, metric): score["value"] for task, scores in benchmarks["results"].items()
            for metric, score in scores.items()}
