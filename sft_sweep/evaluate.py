"""Evaluate a finished run, or any base model, on a data option.

    python -m sft_sweep.evaluate run_dir=outputs/runs/<run>                 # its own validation set
    python -m sft_sweep.evaluate run_dir=outputs/runs/<run> data=alpaca     # another data option
    python -m sft_sweep.evaluate model=qwen3_4b data=sample                 # a base model, untrained

The config is the run's own (its command-line overrides re-applied to conf/), plus yours.
Writes `evaluation.json` + `eval_samples.jsonl` into the run dir (or outputs/eval/<time>/).
"""

import json
import sys
import tempfile
import time
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from sft_sweep.data import build_datasets
from sft_sweep.data.prepare import prepare
from sft_sweep.errors import UserError
from sft_sweep.evaluation import answer_eval, perplexity, probe_answers
from sft_sweep.load_run import load_run
from sft_sweep.model import build_model, build_tokenizer, materialize_random_init
from sft_sweep.packing import BlockDiagonalCollator


def evaluate(overrides: list[str]) -> tuple[dict, Path]:
    from sft_sweep.train import CONF_DIR

    run_dir = next((Path(o.split("=", 1)[1]) for o in overrides if o.startswith("run_dir=")), None)
    rest = [o for o in overrides if not o.startswith("run_dir=")]
    base = []
    if run_dir is not None:
        saved = run_dir / ".hydra" / "overrides.yaml"
        if not saved.is_file():
            raise UserError(f"{saved} not found: not a run dir")
        base = [o for o in yaml.safe_load(saved.read_text()) if not o.startswith("hparams_search=")]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        c = OmegaConf.to_container(compose("config", overrides=base + rest), resolve=True)
    if run_dir is not None:
        model, tokenizer = load_run(run_dir)
        out_dir = run_dir
    else:
        tokenizer = build_tokenizer(c["model"])
        path = c["model"]["name_or_path"]
        if c["model"]["config"]:
            path = str(materialize_random_init(c["model"], tokenizer, Path(tempfile.mkdtemp())))
        model = build_model(c["model"], None, path)
        out_dir = Path("outputs/eval") / time.strftime("%Y-%m-%d_%H-%M-%S")
    _, eval_data = build_datasets(c["data"], tokenizer, c["trainer"]["max_length"])
    rows = prepare(c["data"])[1]
    scores, samples = answer_eval(model, tokenizer, rows, c["eval"])
    result = {"perplexity": perplexity(model, eval_data, BlockDiagonalCollator(tokenizer.pad_token_id),
                                       c["eval"]["batch_size"]),
              **scores, "probes": dict(zip(c["eval"]["probes"], probe_answers(model, tokenizer, c["eval"]))),
              "data": [s["path"] for s in c["data"]["sources"]]}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "evaluation.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    with (out_dir / "eval_samples.jsonl").open("w", encoding="utf-8") as f:
        for sample in samples:
            f.write(json.dumps(sample, ensure_ascii=False) + "\n")
    return result, out_dir


def main(argv: list[str]) -> int:
    try:
        result, out_dir = evaluate(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for key in ("perplexity", "json_validity", "json_key_match", "exact_match", "usability", "n_samples"):
        print(f"{key}: {result[key]}")
    print(f"written to {out_dir / 'evaluation.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
