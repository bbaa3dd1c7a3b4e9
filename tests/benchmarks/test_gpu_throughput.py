"""The GPU benchmark's CPU smoke run: the three sides train the same model on the same rows for 4 steps and the table
adds up."""

import json

import pytest

from sft_sweep.benchmarks.gpu_throughput import main


@pytest.mark.slow
def test_smoke_run_measures_every_side_unpacked_and_packed(tmp_path, capsys):
    assert main(["--smoke", "--out", str(tmp_path / "gpu.json")]) == 0
    results = json.loads((tmp_path / "gpu.json").read_text())["results"]
    sides = ["sft-sweep", "plain TRL", "plain HF loop"]
    assert [(r["packed"], r["side"]) for r in results] == [(p, side) for p in (False, True) for side in sides]
    assert all(r["steps"] == 4 and r["tokens_per_s"] > 0 and r["step_s"] > 0 for r in results)
    assert all(r["n_linear"] == results[0]["n_linear"] > 0 for r in results)  # the same model on both sides
    out = capsys.readouterr().out
    assert "| tiny | packed | sft-sweep |" in out and "tiny unpacked: sft-sweep / plain TRL tokens/s x" in out
    assert "sft-sweep / plain HF loop x" in out
