"""Raw rows from a source: local .json/.jsonl/.parquet/.csv, a `save_to_disk` folder, or a hub id.

Each row comes with its location for error messages: "file:line" for JSONL, "file row N" otherwise.
"""

import csv
import json
from pathlib import Path

from sft_sweep.errors import UserError


def read_source(path: str, split: str = "train"):
    """[(raw_row, location)] from one source."""
    p = Path(path)
    if p.is_dir():
        return _read_saved(p, split)
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix == ".jsonl":
            return _read_jsonl(p)
        if suffix == ".json":
            return _read_json(p)
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return [(row, f"{p} row {i}") for i, row in enumerate(pq.read_table(p).to_pylist(), start=1)]
        if suffix == ".csv":
            with p.open(encoding="utf-8", newline="") as f:
                return [(row, f"{p}:{i}") for i, row in enumerate(csv.DictReader(f), start=2)]
        raise UserError(f"{p}: unsupported data file type {suffix!r} (use .json, .jsonl, .parquet or .csv)")
    if path.count("/") == 1 and not path.startswith((".", "/")):
        return _read_hub(path, split)
    raise UserError(f"data file not found: {p}")


def _read_jsonl(p: Path):
    rows = []
    with p.open(encoding="utf-8", errors="surrogateescape") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append((json.loads(line), f"{p}:{lineno}"))
            except json.JSONDecodeError as exc:
                rows.append((_Invalid(f"invalid JSON: {exc.msg}"), f"{p}:{lineno}"))
    return rows


def _read_json(p: Path):
    text = p.read_text(encoding="utf-8")
    if not text.lstrip().startswith("["):
        return _read_jsonl(p)  # JSON Lines under a .json name
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{p}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    return [(row, f"{p} row {i}") for i, row in enumerate(data, start=1)]


def _read_saved(p: Path, split: str):
    from datasets import DatasetDict, load_from_disk

    try:
        ds = load_from_disk(str(p))
    except FileNotFoundError:
        raise UserError(f"{p}: not a folder written by datasets.save_to_disk") from None
    if isinstance(ds, DatasetDict):
        if split not in ds:
            raise UserError(f"{p}: no split {split!r} (has {sorted(ds)})")
        ds = ds[split]
    return [(row, f"{p} row {i}") for i, row in enumerate(ds, start=1)]


def _read_hub(name: str, split: str):
    from datasets import load_dataset

    try:
        ds = load_dataset(name, split=split)
    except (ConnectionError, OSError, FileNotFoundError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot load dataset {name!r} from the Hugging Face hub or its cache ({reason})") from None
    return [(row, f"{name}[{split}] row {i}") for i, row in enumerate(ds, start=1)]


class _Invalid:
    """Stands in for a line that did not parse, so on_error=skip can count it."""

    def __init__(self, reason: str):
        self.reason = reason
