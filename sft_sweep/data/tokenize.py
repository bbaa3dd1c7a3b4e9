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
from jinja2 import TemplateError

from sft_sweep.data.formats import RowError
from sft_sweep.data.prepare import Problems, damage, file_sizes, problem_lines, publish_dir
from sft_sweep.errors import UserError
from sft_sweep.masking import Encoded, encode_sequences, end_of_turn_token, template_support, trained_turns

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
    block -- never trained -- is all that remains); and on_error, what becomes of a row the chat
    template cannot render as written (skip | raise, as for rows the pipeline rejects)."""
    return {"train_on": data_cfg["train_on"], "train_tool_calls": data_cfg.get("train_tool_calls", True),
            "thinking": data_cfg.get("thinking", True), "on_error": data_cfg.get("on_error", "raise")}


class RowEncoder:
    """Token ids + assistant mask of normalized rows, as training tokenizes them (the data check and inspect use
    it too): one sequence per row, or one per user turn where the template renders earlier turns differently
    once a later user turn follows (masking.encode_sequences; `split_rows` counts them). A row the chat template
    cannot render as written -- it has no place for the row's tool calls or tool schemas, or it raises
    (Llama-3.1's refuses two calls in one turn) -- is a RowError saying so, never a conversation trained without
    its calls. Reasoning a template has no place for is dropped and counted
    (`reasoning_dropped`): the answers still train."""

    def __init__(self, tokenizer, masking: dict):
        trained_turns([], masking["train_on"])  # a bad data.train_on: one line now, not a problem in every row
        self.tokenizer, self.masking = tokenizer, masking
        self.eot = end_of_turn_token(tokenizer)
        self.support = template_support(tokenizer)
        self.reasoning_dropped = self.split_rows = 0

    def __call__(self, row: dict) -> list[Encoded]:
        if row["messages"] is None:  # plain text: every token trains
            ids = self.tokenizer(row["text"], add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
            return [Encoded(ids, [1] * len(ids))]
        if missing := self.support.missing(row):
            raise RowError(f"the chat template has no place for its {' and '.join(missing)} (it would train the "
                           f"conversation without them); use a model whose template has")
        messages = row["messages"] if self.masking["thinking"] else without_reasoning(row["messages"])
        self.reasoning_dropped += self.masking["thinking"] and self.support.drops_reasoning(row)
        try:
            sequences = encode_sequences(self.tokenizer, messages, row["tools"], self.masking["train_on"], self.eot,
                                         self.masking["train_tool_calls"])
        except (TemplateError, TypeError, ValueError) as exc:  # the template's raise_exception, a filter's error
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise RowError(f"the chat template refuses it: {reason}") from None
        except UserError as exc:  # a turn the template renders differently in context (masking.py)
            raise RowError(str(exc)) from None
        self.split_rows += len(sequences) > 1
        return sequences


def tokenize_rows(rows: list[dict], tokenizer, max_length: int, masking: dict, name: str,
                  notes: list[str] | None = None) -> Dataset:
    """Token ids + assistant masks cut at max_length; rows left with no trained token are dropped, and so are
    rows the chat template cannot render (masking["on_error"]: skip, each named in the log, or raise).
    `masking`: see masking_config. What was dropped is logged, and appended to `notes` when given."""
    notes = [] if notes is None else notes
    encoder = RowEncoder(tokenizer, masking)
    problems = Problems(masking.get("on_error", "raise"))
    columns = {"input_ids": [], "assistant_masks": []}
    dropped, shortest_prefix = 0, None  # the fewest tokens any row has before its first trained token
    sequences = 0
    for row in rows:
        try:
            encoded = encoder(row)
        except RowError as exc:
            problems.add(f"{name} row {row.get('id')}", str(exc))
            continue
        sequences += len(encoded)
        for enc in encoded:
            ids, mask = enc.input_ids[:max_length], enc.assistant_masks[:max_length]
            if not any(mask):
                dropped += 1
                if 1 in enc.assistant_masks:
                    prefix = enc.assistant_masks.index(1)
                    shortest_prefix = prefix if shortest_prefix is None else min(shortest_prefix, prefix)
                continue
            columns["input_ids"].append(ids)
            columns["assistant_masks"].append(mask)
    start = len(notes)
    notes += problem_lines(problems.as_dict(), f"{name}: skipped")
    if encoder.reasoning_dropped:
        notes.append(f"{name}: the chat template has no place for reasoning_content: {encoder.reasoning_dropped} "
                     f"rows train their answers without their reasoning")
    if encoder.split_rows:
        notes.append(f"{name}: {encoder.split_rows} conversations train as one sequence per user turn (the chat "
                     f"template renders earlier turns differently once a later user turn follows): {sequences} "
                     f"sequences from {len(rows)} rows")
    if dropped:
        notes.append(f"{name}: dropped {dropped} of {sequences} {'sequences' if encoder.split_rows else 'rows'} "
                     f"with no assistant token left within max_length={max_length}")
    for note in notes[start:]:
        log.warning("%s", note)
    if not columns["input_ids"]:
        if shortest_prefix is not None:
            raise UserError(f"trainer.max_length={max_length} is shorter than the chat template's own header: every "
                            f"{name} row has at least {shortest_prefix} tokens before its first answer token; "
                            f"raise trainer.max_length well above {shortest_prefix}")
        if problems.counts:
            raise UserError(f"{name}: no row left to train on: {next(iter(problems.as_dict().values()))['first'][0]}")
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
            for note in written.get("notes", []):  # what tokenizing dropped, said again by every run that uses it
                log.warning("%s", note)
            return load_tokenized(folder / "train"), load_tokenized(folder / "eval"), folder
        log.warning("data: the tokenized cache %s is damaged (%s): tokenizing again", folder, why)
        shutil.rmtree(folder, ignore_errors=True)
    train_rows, eval_rows = load_rows()
    notes: list[str] = []
    train = tokenize_rows(train_rows, tokenizer, max_length, masking, "train", notes)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    train.save_to_disk(str(tmp / "train"))
    if eval_rows:  # none: no evaluation (and no folder: datasets cannot read back an empty one)
        tokenize_rows(eval_rows, tokenizer, max_length, masking, "eval", notes).save_to_disk(str(tmp / "eval"))
    # `done` last, with every file's size: a cut or lost file is found before it is used (above)
    (tmp / "done").write_text(json.dumps({"key": json.loads(key), "files": file_sizes(tmp),
                                             "notes": notes}) + "\n", encoding="utf-8")
    publish_dir(tmp, folder)
    return load_tokenized(folder / "train"), load_tokenized(folder / "eval"), folder


def load_tokenized(folder: Path) -> Dataset:
    if not folder.is_dir():
        return Dataset.from_dict({"input_ids": [], "assistant_masks": []})
    return load_from_disk(str(folder))
