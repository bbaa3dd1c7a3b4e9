"""Exact deduplication, weighted mixing of sources, and the train/validation split.

All randomness comes from `random.Random(seed)`: the same seed gives the same mix, byte for byte.
"""

import hashlib
import json
import math
import random

from sft_sweep.errors import UserError

STRATEGIES = ("concat", "interleave", "resample")


def row_hash(row: dict) -> bytes:
    """Hash of everything the chat template renders: the messages (system included, with their reasoning and
    tool calls) and the tool schemas, or the text of a text row; metadata (id, source, tags) is ignored. Rows
    with the same turns but other tools are different rows. Normalized messages have a fixed key order, so
    joining their fields is canonical (and much faster than json.dumps(sort_keys=True) of the whole row);
    tool calls and tools, whose key order is the source's, are canonical JSON."""
    if row["messages"] is None:
        body = "T\x1e" + row["text"]
    else:
        body = "\x1e".join(f"{m['role']}\x1f{m['content']}\x1f{m.get('reasoning_content') or ''}\x1f"
                            f"{canonical_json(m['tool_calls']) if m.get('tool_calls') else ''}"
                            for m in row["messages"])
        if row.get("tools"):
            body += "\x1dtools\x1f" + canonical_json(row["tools"])
    return hashlib.blake2b(body.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def canonical_json(value) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def dedup(rows: list[dict], seen: set | None = None) -> tuple[list[dict], int]:
    """Drop rows whose hash is in `seen` or earlier in `rows`; `seen` grows. Returns (kept, removed)."""
    kept, within, across = dedup_source(rows, set() if seen is None else seen)
    return kept, within + across


def dedup_source(rows: list[dict], earlier: set) -> tuple[list[dict], int, int]:
    """One source against itself and against `earlier` sources' hashes (which then grow by this
    source's). Returns (kept, duplicates within, duplicates of earlier sources); one hash per row."""
    own: set = set()
    kept, within, across = [], 0, 0
    for row in rows:
        h = row_hash(row)
        if h in own:
            within += 1
        elif h in earlier:
            own.add(h)
            across += 1
        else:
            own.add(h)
            kept.append(row)
    earlier |= own
    return kept, within, across


def normalize_weights(weights: list[float]) -> list[float]:
    for i, w in enumerate(weights):
        if w < 0:
            raise UserError(f"data.sources[{i}].weight is negative ({w})")
    total = sum(weights)
    if total == 0:
        return [1 / len(weights)] * len(weights)  # all zero: uniform
    return [w / total for w in weights]


def interleave(sources: list[list], probs: list[float], rng: random.Random) -> list:
    """Draw a source by probability, take its next row, until every source is exhausted.
    A source that runs out is dropped; the rest keep their relative odds. Zero-weight sources
    never draw, so they contribute nothing."""
    active = [i for i, p in enumerate(probs) if p > 0 and sources[i]]
    position = [0] * len(sources)
    out = []
    while active:
        i = rng.choices(active, weights=[probs[j] for j in active])[0]
        out.append(sources[i][position[i]])
        position[i] += 1
        if position[i] == len(sources[i]):
            active.remove(i)
    return out


def resample_counts(probs: list[float], total: int) -> list[int]:
    """Integer counts summing exactly to `total`, proportional to probs (largest remainder)."""
    raw = [p * total for p in probs]
    counts = [math.floor(x) for x in raw]
    by_remainder = sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True)
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def resample(sources: list[list], probs: list[float], total: int, rng: random.Random) -> list:
    """Exactly round(p_i * total) rows from source i, drawn with replacement, then shuffled."""
    out = []
    for rows, count in zip(sources, resample_counts(probs, total)):
        if count and not rows:
            raise UserError("resample: a source with positive weight has no rows")
        out += rng.choices(rows, k=count) if count else []
    rng.shuffle(out)
    return out


def mix(sources: list[list], weights: list[float], strategy: str, seed: int, total_size: int | None = None) -> list:
    if strategy not in STRATEGIES:
        raise UserError(f"data.mix must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    rng = random.Random(seed)
    probs = normalize_weights(weights)
    if strategy == "concat":
        return [row for rows in sources for row in rows]
    if strategy == "interleave":
        return interleave(sources, probs, rng)
    if total_size is None:
        total_size = int(0.9 * sum(len(rows) for rows in sources))
    return resample(sources, probs, total_size, rng)


def split(rows: list, val_ratio: float, min_val_size: int, seed: int):
    """Shuffle (seeded) and hold out max(ceil(val_ratio*n), min_val_size) rows, never more than half;
    val_ratio=0 and min_val_size=0 hold out nothing (every row trains, no evaluation)."""
    n = len(rows)
    n_val = min(max(math.ceil(val_ratio * n), min_val_size), n // 2)
    if n_val < 1 and (val_ratio or min_val_size):
        raise UserError(f"{n} rows are too few to hold out an evaluation set")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [rows[i] for i in order[n_val:]], [rows[i] for i in order[:n_val]]
