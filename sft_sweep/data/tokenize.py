"""Prepared rows -> token ids + assistant masks, cached on disk by a fingerprint of everything
that changes them (prepared data, tokenizer, chat template, max_length, packing, train_on).
A second run -- and every trial of a sweep -- loads the cache instead of tokenizing again."""

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from datasets import Dataset, load_from_disk

from sft_sweep.data.prepare import damage, file_sizes, publish_dir
from sft_sweep.errors import UserError
from sft_sweep.masking import Encoded, encode, end_of_turn_token

log = logging.getLogger(__name__)


def tokenizer_fingerprint(tokenizer) -> str:
    h = hashlib.blake2b(digest_size=16)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocab = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    h.update(vocab.encode())
    h.update((tokenizer.chat_template or "").encode())
    h.update(json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str).encode())
    return h.hexdigest()


def without_reasoning(messages: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "reasoning_content"} for m in messages]


def masking_config(data_cfg: dict) -> dict:
    """What the loss sees, from the data group: train_on (all_assistant | last_assistant),
    train_tool_calls, thinking (false drops reasoning_content, so the template's empty think
    block -- never trained -- is all that remains)."""
    return {"train_on": data_cfg["train_on"], "train_tool_calls": data_cfg.get("train_tool_calls", True),
            "thinking": data_cfg.get("thinking", True)}


def encode_row(tokenizer, row: dict, masking: dict, eot: str) -> Encoded:
    """Token ids + assistant mask of one normalized row (plain text: every token trains)."""
    if row["messages"] is None:
        ids = tokenizer(row["text"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        return Encoded(ids, [1] * len(ids))
    messages = row["messages"] if masking["thinking"] else without_reasoning(row["messages"])
    return encode(tokenizer, messages, row["tools"], masking["train_on"], eot, masking["train_tool_calls"])


def tokenize_rows(rows: list[dict], tokenizer, max_length: int, masking: dict, name: str) -> Dataset:
    """Token ids + assistant masks cut at max_length; rows left with no trained token are dropped.
    `masking`: see masking_config."""
    eot = end_of_turn_token(tokenizer)
    columns = {"input_ids": [], "assistant_masks": []}
    dropped, shortest_prefix = 0, None  # the fewest tokens any row has before its first trained token
    for row in rows:
        enc = encode_row(tokenizer, row, masking, eot)
        ids, mask = enc.input_ids[:max_length], enc.assistant_masks[:max_length]
        if not any(mask):
            dropped += 1
            if 1 in enc.assistant_masks:
                prefix = enc.assistant_masks.index(1)
                shortest_prefix = prefix if shortest_prefix is None else min(shortest_prefix, prefix)
            continue
        columns["input_ids"].append(ids)
        columns["assistant_masks"].append(mask)
    if dropped:
        log.warning("%s: dropped %d of %d rows with no assistant token left within max_length=%d",
                    name, dropped, len(rows), max_length)
    if not columns["input_ids"]:
        if shortest_prefix is not None:
            raise UserError(f"trainer.max_length={max_length} is shorter than the chat template's own header: every "
                            f"{name} row has at least {shortest_prefix} tokens before its first answer token; "
                            f"raise trainer.max_length well above {shortest_prefix}")
        raise UserError(f"{name}: no row has an assistant token within max_length={max_length}")
    return Dataset.from_dict(columns)


def cached_tokenize(prepared_fp: str, load_rows, tokenizer, cache_dir: str, max_length: int,
                    packing: bool, masking: dict) -> tuple[Dataset, Dataset, Path]:
    """(train, eval) tokenized datasets: from the cache, or built by tokenizing `load_rows()`."""
    key = json.dumps({"data": prepared_fp, "tokenizer": tokenizer_fingerprint(tokenizer), "max_length": max_length,
                      "packing": packing, "masking": masking}, sort_keys=True)
    folder = Path(cache_dir) / "tokenized" / hashlib.blake2b(key.encode(), digest_size=8).hexdigest()
    if (folder / "done").is_file():
        written = json.loads((folder / "done").read_text(encoding="utf-8"))
        why = damage(folder, written.get("files", {})) if isinstance(written, dict) else "an older cache layout"
        if why is None:
            log.info("data: reusing tokenized cache %s", folder)
            return load_tokenized(folder / "train"), load_tokenized(folder / "eval"), folder
        log.warning("data: the tokenized cache %s is damaged (%s): tokenizing again", folder, why)
        shutil.rmtree(folder, ignore_errors=True)
    train_rows, eval_rows = load_rows()
    train = tokenize_rows(train_rows, tokenizer, max_length, masking, "train")
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    train.save_to_disk(str(tmp / "train"))
    if eval_rows:  # none: no evaluation (and no folder: datasets cannot read back an empty one)
        tokenize_rows(eval_rows, tokenizer, max_length, masking, "eval").save_to_disk(str(tmp / "eval"))
    # `done` last, with every file's size: a cut or lost file is found before it is used (above)
    (tmp / "done").write_text(json.dumps({"key": json.loads(key), "files": file_sizes(tmp)}) + "\n", encoding="utf-8")
    publish_dir(tmp, folder)
    return load_tokenized(folder / "train"), load_tokenized(folder / "eval"), folder


def load_tokenized(folder: Path) -> Dataset:
    if not folder.is_dir():
        return Dataset.from_dict({"input_ids": [], "assistant_masks": []})
    return load_from_disk(str(folder))
