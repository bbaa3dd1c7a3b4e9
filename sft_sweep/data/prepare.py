"""The data pipeline: sources -> normalized, validated, deduplicated rows -> mix -> train/validation.

The result is written once to `<cache_dir>/prepared/<fingerprint>/` (JSONL + Arrow + report.json),
named by a fingerprint of the input files' content and the data config; later runs read it back.
"""

import hashlib
import json
import logging
import os
import re
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from sft_sweep.data.formats import RowError, normalize
from sft_sweep.data.mixing import dedup, dedup_source, mix, split
from sft_sweep.data.sources import _Invalid, read_source
from sft_sweep.data.validate import check_row
from sft_sweep.errors import UserError

log = logging.getLogger(__name__)
PREPARED_VERSION = 2  # bump when the normalized schema or pipeline changes meaning
FIRST_PROBLEMS = 5
# The data group's keys (conf/data/*.yaml); `path`, `format` and `field_map` are data=local's, which its source reads.
KEYS = {"sources", "mix", "total_size", "mix_seed", "val_ratio", "min_val_size", "eval_path", "split_seed", "on_error",
        "max_answer_chars", "train_on", "train_tool_calls", "thinking", "cache_dir", "path", "format", "field_map"}
# Keys of the data config that do not change the prepared rows.
NOT_IN_FINGERPRINT = {"cache_dir", "train_on", "train_tool_calls", "thinking", "path"}


@dataclass
class Problems:
    on_error: str
    counts: Counter = field(default_factory=Counter)
    first: dict = field(default_factory=lambda: defaultdict(list))

    def add(self, where: str, reason: str) -> None:
        if self.on_error == "raise":
            raise UserError(f"{where}: {reason}")
        kind = re.sub(r"\d+", "N", reason)  # "message 3 ..." and "message 5 ..." are one kind
        self.counts[kind] += 1
        if len(self.first[kind]) < FIRST_PROBLEMS:
            self.first[kind].append(f"{where}: {reason}")

    def as_dict(self) -> dict:
        return {kind: {"count": n, "first": self.first[kind]} for kind, n in self.counts.most_common()}


def problem_lines(problems: dict, what: str) -> list[str]:
    """A line per kind of problem (Problems.as_dict(), or a prepared report's `problems`) naming its first rows:
    nothing is dropped without saying which rows and why."""
    return [f"{what} {p['count']} row{'s' * (p['count'] != 1)} ({kind}): " + "; ".join(p["first"][:3])
            + (" ..." if p["count"] > 3 else "") for kind, p in problems.items()]


def source_specs(data_cfg: dict) -> list[dict]:
    specs = []
    for i, spec in enumerate(data_cfg["sources"]):
        if not spec.get("path"):
            raise UserError(f"data.sources[{i}] has no path")
        specs.append({"format": "auto", "field_map": None, "weight": 1.0, "split": "train",
                      "name": Path(str(spec["path"])).stem, **spec})
    return specs


def load_rows(spec: dict, max_answer_chars, problems: Problems) -> list[dict]:
    """Read, normalize, clean and validate one source; bad rows raise or are counted."""
    rows = []
    for i, (raw, where) in enumerate(read_source(spec["path"], spec["split"]), start=1):
        try:
            if isinstance(raw, _Invalid):
                raise RowError(raw.reason)
            row = normalize(raw, spec["format"], spec["field_map"])
            reason = check_row(row, max_answer_chars)
        except RowError as exc:
            reason = str(exc)
        if reason:
            problems.add(where, reason)
            continue
        row["source"] = spec["name"]
        row["id"] = row["id"] or f"{spec['name']}-{i}"
        rows.append(row)
    if any(row["messages"] is None for row in rows):
        log.warning("%s: plain-text rows have no assistant turns; their every token is trained", spec["name"])
    return rows


def content_hash(path: str) -> str:
    """Hash of a file's or folder's bytes; a hub id hashes as its name (its cache can't be read cheaply)."""
    p = Path(path)
    h = hashlib.blake2b(digest_size=16)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p] if p.is_file() else []
    if not files:
        h.update(f"hub:{path}".encode())
    for f in files:
        h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
        with f.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def fingerprint(data_cfg: dict) -> str:
    paths = [s["path"] for s in source_specs(data_cfg)] + ([data_cfg["eval_path"]] if data_cfg.get("eval_path") else [])
    config = {k: v for k, v in sorted(data_cfg.items()) if k not in NOT_IN_FINGERPRINT}
    payload = json.dumps({"version": PREPARED_VERSION, "config": config,
                          "content": [content_hash(str(p)) for p in paths]}, sort_keys=True, default=str)
    return hashlib.blake2b(payload.encode(), digest_size=8).hexdigest()


def run_pipeline(data_cfg: dict) -> tuple[list[dict], list[dict], dict]:
    """(train rows, validation rows, report) from the data config."""
    specs = source_specs(data_cfg)
    problems = Problems(data_cfg.get("on_error", "raise"))
    if problems.on_error not in ("raise", "skip"):
        raise UserError(f"data.on_error must be raise or skip, got {problems.on_error!r}")
    max_chars = data_cfg.get("max_answer_chars")
    report = {"sources": {}, "problems": None}
    seen: set = set()
    eval_rows = None
    if data_cfg.get("eval_path"):
        # Their hashes go into `seen` first: evaluation rows never leak into training.
        eval_rows, _ = dedup(load_rows({"path": data_cfg["eval_path"], "format": "auto", "field_map": None,
                                        "split": "train", "name": "eval"}, max_chars, problems), seen)
    per_source = []
    for spec in specs:
        rows = load_rows(spec, max_chars, problems)
        kept, within, across = dedup_source(rows, seen)
        report["sources"][spec["name"]] = {"rows_valid": len(rows), "duplicates_within": within,
                                           "duplicates_across_sources": across, "rows_kept": len(kept),
                                           "weight": spec["weight"]}
        per_source.append(kept)
    mixed = mix(per_source, [s["weight"] for s in specs], data_cfg.get("mix", "concat"), data_cfg["mix_seed"],
                data_cfg.get("total_size"))
    report["mixed_rows"] = len(mixed)
    report["mixed_by_source"] = dict(Counter(r["source"] for r in mixed))
    report.update(problems=problems.as_dict(), rows_rejected=sum(problems.counts.values()))
    if not mixed or (eval_rows is None and len(mixed) < 2):
        raise TooFewRows(report, specs)
    if eval_rows is None:
        train, validation = split(mixed, data_cfg["val_ratio"], data_cfg["min_val_size"], data_cfg["split_seed"])
    else:
        train, validation = mixed, eval_rows
    report.update(train_rows=len(train), validation_rows=len(validation))
    return train, validation, report


class TooFewRows(UserError):
    """Nothing (or one row) is left to train on; says why: no rows, every row rejected, or duplicates."""

    def __init__(self, report: dict, specs: list[dict]):
        self.report, self.specs = report, specs
        paths = ", ".join(str(s["path"]) for s in specs)
        sources = report["sources"].values()
        valid = sum(s["rows_valid"] for s in sources)
        duplicates = sum(s["duplicates_within"] + s["duplicates_across_sources"] for s in sources)
        if report["rows_rejected"] and not valid:
            kind, first = next(iter(report["problems"].items()))
            why = f"all {report['rows_rejected']} rows were rejected ({first['count']} x {kind})"
        elif not valid:
            why = "it holds no rows"
        elif duplicates:
            why = f"only {report['mixed_rows']} distinct row(s) left after removing {duplicates} exact duplicates"
        else:
            why = f"only {report['mixed_rows']} row(s)"
        super().__init__(f"{paths}: no data to train on: {why}")


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _arrow_rows(rows: list[dict]) -> list[dict]:
    """The rows for the Arrow copy. Arrow holds one schema per column, and tool schemas and tool-call arguments
    differ row to row: both are written as JSON text there (the JSONL copy, which runs read back, keeps them as
    objects; reading the Arrow copy as a source parses them back)."""
    def message(m: dict) -> dict:
        if not m.get("tool_calls"):
            return m
        calls = [{**c, "function": {**c["function"], "arguments": json.dumps(c["function"]["arguments"],
                                                                            ensure_ascii=False)}}
                 for c in m["tool_calls"]]
        return {**m, "tool_calls": calls}

    return [{**r, "tools": json.dumps(r["tools"], ensure_ascii=False) if r["tools"] else None,
             "messages": [message(m) for m in r["messages"]] if r["messages"] is not None else None} for r in rows]


def export(folder: Path, train: list[dict], validation: list[dict], report: dict) -> None:
    """Write the prepared folder atomically: a temp folder renamed into place."""
    from datasets import Dataset

    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, rows in (("train", train), ("validation", validation)):
        _write_jsonl(tmp / f"{name}.jsonl", rows)
        Dataset.from_list(_arrow_rows(rows)).save_to_disk(str(tmp / name))
    # report.json last, with every file's size: a cut or lost file is found before it is used (prepare)
    report = {**report, "files": file_sizes(tmp)}
    (tmp / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    publish_dir(tmp, folder)


def file_sizes(folder: Path, skip: tuple = ()) -> dict:
    """{relative path: size in bytes} of every file in a cache folder (what verify checks it against)."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in skip}


def damage(folder: Path, sizes: dict) -> str | None:
    """Why a cache folder no longer matches the sizes written with it (a file cut short, lost or grown), or None."""
    for name, size in sizes.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} of its {size} bytes"
    return None


def publish_dir(tmp: Path, folder: Path) -> None:
    """Move a finished temp folder into place in one rename. If another process (a DDP rank, a
    parallel sweep trial) published the same fingerprint first, theirs is identical: keep it."""
    try:
        os.rename(tmp, folder)
    except OSError:
        if not folder.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def prepare(data_cfg: dict, fp: str | None = None) -> tuple[list[dict], list[dict], dict, Path]:
    """Prepared rows for this data config, from the cache folder when it already exists.
    `fp`: the config's fingerprint when the caller has it (it hashes every input file)."""
    folder = Path(data_cfg["cache_dir"]) / "prepared" / (fp or fingerprint(data_cfg))
    if (folder / "report.json").is_file():
        report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
        why = damage(folder, report.get("files", {}))
        if why is None:
            return read_jsonl(folder / "train.jsonl"), read_jsonl(folder / "validation.jsonl"), report, folder
        log.warning("data: the prepared data %s is damaged (%s): preparing it again", folder, why)
        shutil.rmtree(folder, ignore_errors=True)
    train, validation, report = run_pipeline(data_cfg)
    report["fingerprint"] = folder.name
    export(folder, train, validation, report)
    log.info("data: prepared %d train / %d validation rows in %s", len(train), len(validation), folder)
    return train, validation, report, folder
