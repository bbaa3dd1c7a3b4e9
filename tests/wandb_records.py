"""Read an offline W&B run's records (tests only): the `.wandb` file is a LevelDB-style log
(32 KiB blocks of chunks: crc32 [4] | length [2] | type [1] | data) of protobuf `Record`s,
after a 7-byte ":W&B" header. wandb 0.31 ships no Python reader for it."""

import struct
import time
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path, timeout: float = 30.0) -> list:
    """Every record, once the run's `exit` record is there: wandb-core may still be appending to the file
    for a moment after wandb.finish() returns (then a run's last alerts and summary are not in it yet)."""
    deadline = time.time() + timeout
    while True:
        found = list(read_records(path))
        if any(r.WhichOneof("record_type") == "exit" for r in found) or time.time() > deadline:
            return found
        time.sleep(0.2)


def read_records(path: Path):
    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < 7:  # block trailer padding
            pos += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        if len(chunk) < length:  # the tail of a file wandb-core is still appending to: not a record yet
            break
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def alerts(path: Path) -> list[str]:
    return [r.alert.title for r in records(path) if r.WhichOneof("record_type") == "alert"]


def summary(path: Path) -> dict:
    import json

    out = {}
    for r in records(path):
        if r.WhichOneof("record_type") == "summary":
            for item in r.summary.update:
                out[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return out


def history(path: Path) -> list[dict]:
    import json

    rows = []
    for r in records(path):
        if r.WhichOneof("record_type") == "history":
            rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item})
    return rows


def run_info(path: Path) -> dict:
    for r in records(path):
        if r.WhichOneof("record_type") == "run":
            return {"group": r.run.run_group, "name": r.run.display_name, "project": r.run.project}
    return {}
