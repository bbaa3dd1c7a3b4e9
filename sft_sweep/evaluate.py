"""Evaluate a finished run, or any base model, on a data option.

    python -m sft_sweep.evaluate run_dir=outputs/runs/<run>                 # its own validation set
    python -m sft_sweep.evaluate run_dir=outputs/runs/<run> data=alpaca     # another data option
    python -m sft_sweep.evaluate model=qwen3_4b data=sample                 # a base model, untrained
    python -m sft_sweep.evaluate run_dir=outputs/runs/<run> benchmarks=[gsm8k,ifeval]   # + lm-eval's tasks

The config is the run's own (its command-line overrides re-applied to conf/), plus yours.
Writes evaluation.json + evaluation_samples.jsonl into the run dir (or outputs/eval/<time>/); with other
data, beside them: evaluation-data=alpaca.json (the run's own evaluation is never overwritten).
`benchmarks=[...]` (eval.benchmarks) adds lm-evaluation-harness tasks (bench.py): their scores as bench_<task>_<metric>
and, with every metric's stderr, lm-eval's version and each task's config hash, under `benchmarks`.
"""

import sys
import tempfile
import time

from sft_sweep import bench, config, console, trained
from sft_sweep import metric_names as names
from sft_sweep.data import build_datasets
from sft_sweep.errors import UserError, one_line_errors
from sft_sweep.evaluation import answer_eval, perplexity, probe_answers, probe_question, write_samples
from sft_sweep.model import base_model_path, build_model, build_tokenizer
from sft_sweep.packing import BlockDiagonalCollator
from sft_sweep.run_dir import RunDir, write_json

SHOWN = (names.PERPLEXITY, names.JSON_VALIDITY, names.JSON_KEY_MATCH, names.EXACT_MATCH, names.EXACT_MATCH_BY_TAG,
         names.USABILITY, names.ANSWER_DIVERSITY, names.N_SAMPLES)


def evaluate(overrides: list[str]) -> tuple[dict, RunDir]:
    run_dir = next((RunDir(o.split("=", 1)[1]) for o in overrides if o.startswith("run_dir=")), None)
    rest = [f"eval.{o}" if o.startswith("benchmarks") else o for o in overrides if not o.startswith("run_dir=")]
    base = [o for o in run_dir.overrides() if not o.startswith("hparams_search=")] if run_dir else []
    c = config.plain(config.compose(base + rest))
    bench.check(c["eval"]["benchmarks"], c["data"]["cache_dir"])  # before any model loads
    if run_dir is not None:
        model, tokenizer = trained.load(run_dir)
        # (benchmarks add to the run's own evaluation: only other data is written beside it)
        out, samples_out = run_dir.evaluation_files([o for o in rest if not o.startswith("eval.benchmarks")])
    else:
        tokenizer = build_tokenizer(c["model"])
        model = build_model(c["model"], None, base_model_path(c["model"], tokenizer, tempfile.mkdtemp()))
        out, samples_out = RunDir(f"outputs/eval/{time.strftime('%Y-%m-%d_%H-%M-%S')}").evaluation_files([])
    data = build_datasets(c["data"], tokenizer, c["trainer"]["max_length"])
    if data.eval is None:
        raise UserError("no evaluation set (data.val_ratio=0 data.min_val_size=0): set data.eval_path or a split")
    scores, samples = answer_eval(model, tokenizer, data.validation_rows, c["eval"])
    result = {names.PERPLEXITY: perplexity(model, data.eval, BlockDiagonalCollator(tokenizer.pad_token_id),
                                           c["eval"]["batch_size"]),
              **scores, names.PROBES: dict(zip(map(probe_question, c["eval"]["probes"]),
                                               probe_answers(model, tokenizer, c["eval"]))),
              "data": [s["path"] for s in c["data"]["sources"]], "overrides": rest}
    if c["eval"]["benchmarks"]:
        benchmarks = bench.run(model, tokenizer, c["eval"], trained.settings(c["eval"], tokenizer.chat_template or ""),
                               c["data"]["cache_dir"])
        samples += [{"benchmark": True, **s} for s in benchmarks.pop("samples")]
        result.update(bench.metrics(benchmarks), benchmarks=benchmarks)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    write_samples(samples_out, samples)
    return result, out


@one_line_errors
def main(argv: list[str]) -> int:
    config.parse_cli_args([a for a in argv if a in ("-h", "--help")], __doc__)
    console.cli_logging()
    result, out = evaluate(argv)
    for key in [*SHOWN, *(k for k in result if k.startswith(names.BENCH_PREFIX))]:
        print(f"{key}: {result[key]}")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
