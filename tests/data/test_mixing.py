"""Dedup counts, weighted mixing (concat / interleave / resample), split."""

import random
from collections import Counter

import pytest

from sft_sweep.data.mixing import dedup, interleave, mix, normalize_weights, resample_counts, split
from sft_sweep.errors import UserError


def rows(source, n, start=0):
    return [{"messages": [{"role": "user", "content": f"{source} {i}"}, {"role": "assistant", "content": "a"}],
             "source": source} for i in range(start, start + n)]


def test_dedup_within_and_against_seen():
    a = rows("a", 5) + rows("a", 2)  # two repeats
    kept, removed = dedup(a)
    assert (len(kept), removed) == (5, 2)
    seen = set()
    dedup(kept, seen)
    b, removed = dedup(rows("a", 3, start=3) + rows("b", 4), seen)  # a 3, a 4 were seen in source a
    assert (len(b), removed) == (5, 2)


def test_dedup_keys_on_everything_rendered_tools_and_system_included():
    """Two rows with the same turns but other tool schemas are two rows (glaive's tool-call demo has such pairs);
    the same schemas or arguments written in another key order or as JSON text are the same row."""
    from sft_sweep.data.formats import normalize

    def row(tools, arguments='{"city": "Paris", "unit": "C"}', system=None):
        turns = [{"from": "human", "value": "Weather in Paris?"},
                 {"from": "function_call", "value": f'{{"name": "get_weather", "arguments": {arguments}}}'},
                 {"from": "observation", "value": "15"}, {"from": "gpt", "value": "15 degrees."}]
        return normalize({"conversations": turns, "tools": tools, **({"system": system} if system else {})},
                         "sharegpt")

    weather = '[{"name": "get_weather", "description": "Weather", "parameters": {"type": "object"}}]'
    reordered = '[{"description": "Weather", "parameters": {"type": "object"}, "name": "get_weather"}]'
    both = '[{"name": "get_weather", "parameters": {}}, {"name": "get_time", "parameters": {}}]'
    kept, removed = dedup([row(weather), row(both), row(None), row(weather, system="Be brief."),
                           row(reordered), row(weather, arguments='{"unit": "C", "city": "Paris"}')])
    assert (len(kept), removed) == (4, 2)


def test_weights_normalized_zero_uniform_negative_error():
    assert normalize_weights([3, 1]) == [0.75, 0.25]
    assert normalize_weights([0, 0, 0]) == [1 / 3] * 3
    with pytest.raises(UserError, match=r"data.sources\[1\].weight is negative \(-1\)"):
        normalize_weights([1, -1])


def test_interleave_proportions_and_a_source_that_runs_out():
    big_a, big_b, small_c = rows("a", 3000), rows("b", 3000), rows("c", 100)
    out = interleave([big_a, big_b, small_c], [0.5, 0.3, 0.2], random.Random(0))
    assert len(out) == 6100 and Counter(r["source"] for r in out) == {"a": 3000, "b": 3000, "c": 100}
    # while all three are active (the first 400 draws, before c can run out) odds follow the weights
    head = Counter(r["source"] for r in out[:400])
    assert abs(head["a"] / 400 - 0.5) < 0.08 and abs(head["b"] / 400 - 0.3) < 0.08
    # after c is exhausted, a and b keep their relative odds 5:3
    c_done = max(i for i, r in enumerate(out) if r["source"] == "c")
    tail = Counter(r["source"] for r in out[c_done + 1: c_done + 1601])
    assert abs(tail["a"] / (tail["a"] + tail["b"]) - 0.625) < 0.04
    # each source's rows keep their order
    assert [r for r in out if r["source"] == "c"] == small_c


def test_interleave_zero_weight_source_contributes_nothing():
    out = mix([rows("a", 50), rows("b", 50)], [1, 0], "interleave", seed=1)
    assert Counter(r["source"] for r in out) == {"a": 50}


def test_resample_hits_exact_counts_with_replacement():
    assert resample_counts([0.6, 0.3, 0.1], 1000) == [600, 300, 100]
    assert sum(resample_counts([1 / 3] * 3, 100)) == 100
    out = mix([rows("a", 10), rows("b", 500), rows("c", 50)], [0.6, 0.3, 0.1], "resample", seed=3, total_size=1000)
    assert Counter(r["source"] for r in out) == {"a": 600, "b": 300, "c": 100}  # a is upsampled 60x
    default = mix([rows("a", 100), rows("b", 100)], [1, 1], "resample", seed=3)
    assert len(default) == 180  # 0.9 x the sources' rows


def test_mixing_is_deterministic_per_seed():
    sources = [rows("a", 200), rows("b", 200)]
    for strategy in ("interleave", "resample"):
        assert mix(sources, [1, 1], strategy, seed=5) == mix(sources, [1, 1], strategy, seed=5)
        assert mix(sources, [1, 1], strategy, seed=5) != mix(sources, [1, 1], strategy, seed=6)
    assert mix(sources, [1, 1], "concat", seed=5) == sources[0] + sources[1]
    with pytest.raises(UserError, match="data.mix must be one of concat, interleave, resample"):
        mix(sources, [1, 1], "shuffle", seed=5)


def test_split_sizes():
    data = list(range(2400))
    train, val = split(data, 0.1, 100, seed=42)
    assert (len(train), len(val)) == (2160, 240) and sorted(train + val) == data
    assert [len(x) for x in split(list(range(10)), 0.1, 100, seed=0)] == [5, 5]  # never more than half
    assert [len(x) for x in split(list(range(300)), 0.01, 100, seed=0)] == [200, 100]
