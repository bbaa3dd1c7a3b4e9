"""Data side of a run: read chat rows, validate them, split, tokenize with assistant masks.

Rows are the normalized chat schema: `messages` (role/content; roles system, user,
assistant, tool; assistant `tool_calls` and `reasoning_content`), optional `tools`,
and metadata (`id`, `source`, `tags`).
"""

import json
import logging
import math
import random
from pathlib import Path

from datasets import Dataset

from sft_sweep.errors import UserError
from sft_sweep.masking import encode, end_of_turn_token

log = logging.getLogger(__name__)
ROLES = {"system", "user", "assistant", "tool"}


def read_rows(path: str) -> list[dict]:
    """A JSON list or JSONL file of rows; errors name the file and line."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"data file not found: {file}")
    text = file.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{file}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise UserError(f"{file}:{lineno}: invalid JSON: {exc.msg}") from None
    return rows


def validate_row(row, where: str) -> dict:
    """Check one row; `where` is 'file:line' (or 'file row N') for the error."""
    messages = row.get("messages") if isinstance(row, dict) else None
    if not isinstance(messages, list) or not messages:
        raise UserError(f"{where}: row has no `messages` list")
    for turn, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES:
            raise UserError(f"{where}: message {turn} has unknown role {role!r} (expected one of {sorted(ROLES)})")
    roles = [m["role"] for m in messages]
    if "assistant" not in roles:
        raise UserError(f"{where}: conversation has no assistant turn")
    if "user" not in roles:
        raise UserError(f"{where}: conversation has no user turn")
    return {"messages": messages, "tools": row.get("tools") or None}


def load_chat_file(path: str) -> list[dict]:
    rows = read_rows(path)
    is_jsonl = not Path(path).read_text(encoding="utf-8").lstrip().startswith("[")
    return [validate_row(row, f"{path}:{i}" if is_jsonl else f"{path} row {i}")
            for i, row in enumerate(rows, start=1)]


def split_rows(rows: list, val_ratio: float, min_val_size: int, seed: int):
    """Shuffle (seeded) and hold out max(val_ratio * n, min_val_size) rows, never more than half."""
    n = len(rows)
    n_val = min(max(math.ceil(val_ratio * n), min_val_size), n // 2)
    if n_val < 1:
        raise UserError(f"{n} rows are too few to hold out an evaluation set")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [rows[i] for i in order[n_val:]], [rows[i] for i in order[:n_val]]


def tokenize_rows(rows: list[dict], tokenizer, max_length: int, train_on: str, name: str) -> Dataset:
    """Token ids + assistant masks, cut at max_length; rows left with no trained token are dropped."""
    eot = end_of_turn_token(tokenizer)
    columns = {"input_ids": [], "assistant_masks": []}
    dropped = 0
    for row in rows:
        enc = encode(tokenizer, row["messages"], row["tools"], train_on, eot)
        ids, mask = enc.input_ids[:max_length], enc.assistant_masks[:max_length]
        if not any(mask):
            dropped += 1
            continue
        columns["input_ids"].append(ids)
        columns["assistant_masks"].append(mask)
    if dropped:
        log.warning("%s: dropped %d of %d rows with no assistant token left within max_length=%d",
                    name, dropped, len(rows), max_length)
    if not columns["input_ids"]:
        raise UserError(f"{name}: no row has an assistant token within max_length={max_length}")
    return Dataset.from_dict(columns)


def build_datasets(data_cfg: dict, tokenizer, max_length: int):
    """(train, eval) tokenized datasets for the run."""
    rows = load_chat_file(data_cfg["path"])
    if data_cfg.get("eval_path"):
        train_rows, eval_rows = rows, load_chat_file(data_cfg["eval_path"])
    else:
        train_rows, eval_rows = split_rows(rows, data_cfg["val_ratio"], data_cfg["min_val_size"],
                                           data_cfg["split_seed"])
    log.info("data: %d train rows, %d eval rows from %s", len(train_rows), len(eval_rows), data_cfg["path"])
    train = tokenize_rows(train_rows, tokenizer, max_length, data_cfg["train_on"], "train")
    evaluation = tokenize_rows(eval_rows, tokenizer, max_length, data_cfg["train_on"], "eval")
    return train, evaluation
