"""Data pipeline figures.

    python -m sft_sweep.benchmarks.data_prep [--rows 100000]

1. Throughput of normalize + validate + dedup on Alpaca-sized rows (target >= 20,000 rows/s on 2 cores):
   rows shaped like LLaMA-Factory's alpaca_en_demo (read from ../shared when present, else synthetic),
   repeated with a counter so dedup sees distinct rows, written to one JSON file and read back.
2. Data preparation for a run (pipeline + tokenization) on the sample data: first run vs a second
   run that finds the caches (target: second >= 10x faster).
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

from sft_sweep.data import build_datasets
from sft_sweep.data.prepare import run_pipeline

SHARED_ALPACA = Path(__file__).resolve().parents[3] / "shared" / "data" / "llamafactory" / "alpaca_en_demo.json"


def alpaca_rows(n: int) -> list[dict]:
    if SHARED_ALPACA.is_file():
        base = json.loads(SHARED_ALPACA.read_text(encoding="utf-8"))
    else:
        base = [{"instruction": f"Explain topic {i} in a short paragraph.", "input": "",
                 "output": "A short paragraph of about sixty words. " * 8} for i in range(1000)]
    return [{**base[i % len(base)], "instruction": f"{base[i % len(base)]['instruction']} #{i}"} for i in range(n)]


def data_cfg(path: str, cache: str, fmt: str = "auto") -> dict:
    return {"sources": [{"name": "bench", "path": path, "format": fmt, "weight": 1.0}], "mix": "concat",
            "total_size": None, "mix_seed": 42, "val_ratio": 0.1, "min_val_size": 100, "eval_path": None,
            "split_seed": 42, "on_error": "skip", "max_answer_chars": 20000, "train_on": "all_assistant",
            "cache_dir": cache}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "alpaca.json"
        path.write_text(json.dumps(alpaca_rows(args.rows), ensure_ascii=False), encoding="utf-8")
        started = time.perf_counter()
        train, val, report = run_pipeline(data_cfg(str(path), tmp, "alpaca"))
        seconds = time.perf_counter() - started
        print(f"normalize + validate + dedup (+ read, split): {args.rows} Alpaca rows in {seconds:.2f}s = "
              f"{args.rows / seconds:,.0f} rows/s ({len(train) + len(val)} kept)")

        from transformers import AutoTokenizer

        from sft_sweep.config import asset_path

        tokenizer = AutoTokenizer.from_pretrained(asset_path("tiny_tokenizer"))
        cfg = data_cfg(asset_path("sample/chat.jsonl"), str(Path(tmp) / "cache"))
        times = []
        for _ in range(2):
            started = time.perf_counter()
            build_datasets(cfg, tokenizer, 1024)
            times.append(time.perf_counter() - started)
        print(f"data preparation for a run (sample data): first {times[0]:.3f}s, second (cached) {times[1]:.3f}s, "
              f"{times[0] / times[1]:.0f}x faster")


if __name__ == "__main__":
    main()
