"""The whole pipeline: counts after dedup and mixing, exports, caches, the CLI."""

import json
import re
import sys

import pytest
from datasets import load_from_disk
from transformers import AutoTokenizer

from sft_sweep.config import asset_path
from sft_sweep.data import build_datasets
from sft_sweep.data.__main__ import main as data_cli
from sft_sweep.data.prepare import prepare, run_pipeline
from sft_sweep.errors import UserError
from tests.helpers import FIXTURES, SHARED, plain

F = FIXTURES / "formats"


def data_cfg(tmp_path, *overrides):
    return {**plain(*overrides)["data"], "cache_dir": str(tmp_path / "cache")}


def three_sources(tmp_path, mix="concat", **extra):
    cfg = data_cfg(tmp_path)
    cfg.update(sources=[{"name": "m", "path": str(F / "messages.jsonl"), "weight": 1},
                        {"name": "alp", "path": str(F / "alpaca.json"), "format": "alpaca", "weight": 1},
                        {"name": "sg", "path": str(F / "sharegpt.json"), "weight": 1}],
               mix=mix, on_error="skip", min_val_size=2, val_ratio=0.1, **extra)
    return cfg


def test_counts_after_dedup_within_and_across_sources(tmp_path):
    train, val, report = run_pipeline(three_sources(tmp_path))
    # messages: 5 valid, m3-dup repeats m3; alpaca: 4 valid, "1+1?" repeats m3; sharegpt: 3 valid, "1+1?" again
    assert report["sources"] == {
        "m": {"rows_valid": 5, "duplicates_within": 1, "duplicates_across_sources": 0, "rows_kept": 4, "weight": 1},
        "alp": {"rows_valid": 4, "duplicates_within": 0, "duplicates_across_sources": 1, "rows_kept": 3, "weight": 1},
        "sg": {"rows_valid": 3, "duplicates_within": 0, "duplicates_across_sources": 1, "rows_kept": 2, "weight": 1},
    }
    assert report["mixed_rows"] == 9 and (len(train), len(val)) == (7, 2)
    assert report["rows_rejected"] == 6  # 4 bad messages lines, 1 empty alpaca answer, 1 unknown speaker


def test_eval_file_never_mixes_into_training(tmp_path):
    cfg = three_sources(tmp_path, eval_path=str(F / "prompt_completion.jsonl"))
    cfg["sources"].append({"name": "pc", "path": str(F / "prompt_completion.jsonl"), "weight": 1})
    train, val, report = run_pipeline(cfg)
    assert [r["messages"][1]["content"] for r in val] == ["Paris", "6"]
    assert report["sources"]["pc"]["duplicates_across_sources"] == 2 and len(train) == 9


def test_export_is_byte_identical_for_the_same_seed(tmp_path):
    a = three_sources(tmp_path / "a", mix="interleave")
    b = three_sources(tmp_path / "b", mix="interleave")
    _, _, _, folder_a = prepare(a)
    _, _, _, folder_b = prepare(b)
    assert folder_a.name == folder_b.name  # same inputs + config -> same fingerprint
    for name in ("train.jsonl", "validation.jsonl", "train/data-00000-of-00001.arrow"):
        assert (folder_a / name).read_bytes() == (folder_b / name).read_bytes(), name
    text = (folder_a / "train.jsonl").read_text(encoding="utf-8")
    assert "\\u" not in text and ("你好" in text or "小明" in text)  # UTF-8, not ASCII-escaped
    assert len(load_from_disk(str(folder_a / "train"))) == len(text.splitlines())
    c = three_sources(tmp_path / "c", mix="interleave", mix_seed=7)
    _, _, _, folder_c = prepare(c)
    assert folder_c.name != folder_a.name


def test_changed_input_content_changes_the_fingerprint(tmp_path):
    src = tmp_path / "d.jsonl"
    src.write_text((F / "prompt_completion.jsonl").read_text())
    cfg = data_cfg(tmp_path, "data=local", f"data.path={src}")
    cfg.update(min_val_size=1)
    _, _, _, first = prepare(cfg)
    src.write_text(src.read_text() + '{"prompt": "3?", "completion": "3"}\n')
    _, _, _, second = prepare(cfg)
    assert first != second and first.exists() and second.exists()


def test_bad_data_writes_nothing(tmp_path):
    cfg = three_sources(tmp_path)
    cfg["on_error"] = "raise"
    with pytest.raises(UserError, match="messages.jsonl:5: invalid JSON"):
        prepare(cfg)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.jsonl"))


def test_tokenized_cache_is_reused(tmp_path, monkeypatch):
    cfg = data_cfg(tmp_path)
    tok = AutoTokenizer.from_pretrained(asset_path("tiny_tokenizer"))
    first = build_datasets(cfg, tok, 1024)

    def no_work(*args, **kwargs):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(sys.modules["sft_sweep.data.tokenize"], "tokenize_rows", no_work)
    monkeypatch.setattr(sys.modules["sft_sweep.data.prepare"], "run_pipeline", no_work)
    second = build_datasets(cfg, tok, 1024)
    assert first.train["input_ids"] == second.train["input_ids"]
    assert first.eval["assistant_masks"] == second.eval["assistant_masks"]
    # the validation rows for answer-level evaluation come back too, as chat rows
    assert first.validation_rows == second.validation_rows and len(second.validation_rows) == len(second.eval)
    assert second.validation_rows[0]["messages"][-1]["role"] == "assistant"
    assert len(list((tmp_path / "cache" / "tokenized").iterdir())) == 1
    monkeypatch.undo()
    build_datasets(cfg, tok, 512)  # another max_length: another cache entry
    assert len(list((tmp_path / "cache" / "tokenized").iterdir())) == 2


def test_a_damaged_cache_is_found_and_built_again(tmp_path, caplog):
    """A tokenized cache file cut short, a prepared validation.jsonl cut to a part of its lines: each is found by
    the sizes written with it, named in one line, and rebuilt -- never read as it is."""
    import logging

    cfg = data_cfg(tmp_path)
    tok = AutoTokenizer.from_pretrained(asset_path("tiny_tokenizer"))
    first = build_datasets(cfg, tok, 1024)
    first_ids, n_validation = first.train["input_ids"], len(first.validation_rows)
    [tokenized] = (tmp_path / "cache" / "tokenized").iterdir()
    arrow = next(tokenized.glob("train/*.arrow"))
    cut = arrow.read_bytes()[:1000]
    arrow.unlink()  # (a new file: this process still maps the old one)
    arrow.write_bytes(cut)
    [prepared] = (tmp_path / "cache" / "prepared").iterdir()
    validation = prepared / "validation.jsonl"
    validation.write_text("".join(validation.read_text().splitlines(keepends=True)[:100]))
    with caplog.at_level(logging.WARNING):
        again = build_datasets(cfg, tok, 1024)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"data: the tokenized cache {tokenized} is damaged (train/{arrow.name} has 1000 of its " in warnings[0]
    assert warnings[1].startswith(f"data: the prepared data {prepared} is damaged (validation.jsonl has ")
    assert again.train["input_ids"] == first_ids  # rebuilt, the same
    assert len(again.validation_rows) == n_validation == len(again.eval) == 216


def test_sample_data_after_dedup(tmp_path):
    train, val, report = run_pipeline(data_cfg(tmp_path))
    assert report["sources"]["sample"]["duplicates_within"] == 243
    assert (len(train), len(val)) == (1941, 216)


def test_check_cli_reports(tmp_path, capsys):
    assert data_cli(["check", str(F / "messages.jsonl"), f"data.cache_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "rows: 4 valid (2 train, 2 validation), 4 rejected" in out
    assert "1 duplicates within" in out and "length in tokens" in out and "p50" in out
    assert f"{F / 'messages.jsonl'}:6: no assistant turn" in out


def test_prepare_and_inspect_cli(tmp_path, capsys):
    assert data_cli(["prepare", "data=mixture", f"data.cache_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    folder = out.strip().split(" in ")[-1]
    report = json.loads(open(f"{folder}/report.json").read())
    # interleaving uses every distinct row of every source, once
    assert report["mixed_rows"] == sum(s["rows_kept"] for s in report["sources"].values()) > 2000
    assert data_cli(["inspect", "n=2", f"data.cache_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert out.count("tokens trained)") == 2 and "[[" in out and "<|im_end|>]]" in out
    assert data_cli(["prepare", "data=local", "data.path=/nope.jsonl"]) == 2
    assert "error: data file not found: /nope.jsonl" in capsys.readouterr().err


def test_check_says_exactly_what_training_will_cut_drop_and_hold_out(tmp_path, capsys, tok):
    """`data check`'s counts are training's own: rows cut at max_length, rows dropped for having no answer token
    within it (data/tokenize.py), and the validation share with the setting that decided it."""
    words = " ".join(f"word{i}" for i in range(200))
    rows = ([{"messages": [{"role": "user", "content": f"What is {i} + 1?"},
                           {"role": "assistant", "content": str(i + 1)}]} for i in range(6)]
            + [{"messages": [{"role": "user", "content": f"{words} {i}"},  # the answer lies beyond 256 tokens
                             {"role": "assistant", "content": "ok"}]} for i in range(4)]
            + [{"messages": [{"role": "user", "content": f"Repeat {i}."},  # a long answer: cut, still trained
                             {"role": "assistant", "content": f"{words} {i}"}]} for i in range(4)])
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["check", str(path), f"data.cache_dir={tmp_path / 'cache'}", "trainer.max_length=256",
            "data.min_val_size=4"]
    assert data_cli(args) == 0
    out = capsys.readouterr().out
    assert "validation: 4 of 14 rows held out (data.min_val_size=4; data.val_ratio=0.1 alone would hold out 2)" in out
    counts = {split: re.search(rf"^{split} at trainer.max_length=256: (\d+) of (\d+) rows whole, (\d+) cut .*, (\d+) "
                               rf"dropped", out, re.M).groups() for split in ("train", "validation")}
    train, validation, _ = run_pipeline(data_cfg(tmp_path, "data=local", f"data.path={path}", "data.min_val_size=4"))
    from sft_sweep.data.tokenize import masking_config, tokenize_rows

    masking = masking_config(data_cfg(tmp_path))
    for split, split_rows in (("train", train), ("validation", validation)):
        whole, n, cut, dropped = map(int, counts[split])
        assert n == len(split_rows) and whole + cut + dropped == n
        assert len(tokenize_rows(split_rows, tok, 256, masking, split)) == whole + cut  # training keeps these
    assert sum(int(counts[s][3]) for s in counts) == 4 and sum(int(counts[s][2]) for s in counts) == 4
    assert "warning: training will cut" in out


def test_rows_the_template_cannot_render_are_named_by_the_check_skipped_by_a_run_or_stop_it(tmp_path, capsys, tok):
    """The bundled ShareGPT sample's tool-call rows on a template with no place for tool calls (SmolLM2's): the data
    check names them and why; training skips them by default, saying which, or stops before training with
    on_error=raise. Never a conversation trained without its calls."""
    chatml = FIXTURES / "chat_templates" / "smollm2.jinja"
    args = ["check", "data=sharegpt", f"data.cache_dir={tmp_path}", f"model.chat_template={chatml}"]
    assert data_cli(args) == 0
    out = capsys.readouterr().out
    refused = int(re.search(r"the chat template cannot render (\d+) rows as written", out).group(1))
    sample = json.loads(open(asset_path("sample/sharegpt.json"), encoding="utf-8").read())
    calls = {tuple(json.dumps(t) for t in r["conversations"]) for r in sample
             if any(t["from"] == "function_call" for t in r["conversations"])}
    assert refused == len(calls) and "no place for its tool calls and tool schemas" in out
    train, validation, _ = run_pipeline(data_cfg(tmp_path, "data=sharegpt"))
    template = AutoTokenizer.from_pretrained(asset_path("tiny_tokenizer"))
    template.chat_template = chatml.read_text(encoding="utf-8")
    from sft_sweep.data.tokenize import masking_config, tokenize_rows

    masking = masking_config(data_cfg(tmp_path, "data=sharegpt"))
    notes = []
    kept = tokenize_rows(train, template, 256, masking, "train", notes)
    with_calls = sum(any(m.get("tool_calls") for m in r["messages"]) for r in train)
    assert len(kept) == len(train) - with_calls and with_calls > 0
    assert notes[0].startswith(f"train: skipped {with_calls} rows (the chat template has no place for its tool calls")
    assert len(tokenize_rows(train, tok, 256, masking, "train")) == len(train)  # the tiny template renders them all
    with pytest.raises(UserError, match=r"^train row sharegpt-\d+: the chat template has no place for its tool calls"):
        tokenize_rows(train, template, 256, {**masking, "on_error": "raise"}, "train")


@pytest.mark.slow
def test_the_sharegpt_presets_documented_example_trains(tmp_path, caplog):
    """README: `python -m sft_sweep data=sharegpt data.sources.0.path=../shared/.../glaive_toolcall_zh_demo.json`
    trains; its two malformed rows (a tool result after a call written as plain text) are skipped and named."""
    path = SHARED / "data" / "llamafactory" / "glaive_toolcall_zh_demo.json"
    if not path.is_file():
        pytest.skip("../shared is absent: glaive_toolcall_zh_demo.json is in ../shared/data/llamafactory")
    from tests.helpers import TINY, run_cli

    run_dir = tmp_path / "run"
    assert run_cli(f"hydra.run.dir={run_dir}", "data=sharegpt", f"data.sources.0.path={path}", *TINY,
                   "trainer.max_steps=4", "trainer.max_length=2048", "eval.max_samples=2",
                   "eval.before_training=false", "eval.general_path=null") == 0
    log = (run_dir / "train.log").read_text(encoding="utf-8")
    assert (f"data: skipped 2 rows (tool message N does not follow an assistant tool call): {path} row 198: tool "
            f"message 2 does not follow an assistant tool call; {path} row 294") in log
