"""Every command-line tool answers --help with its usage (exit 0) and bad arguments with one line."""

import pytest

from sft_sweep import chat, evaluate, export, reproduce
from sft_sweep.data import __main__ as data_cli
from tests.helpers import run_cli


def exit_code(main, argv):
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("main, usage", [
    (evaluate.main, "python -m sft_sweep.evaluate run_dir=outputs/runs/<run>"),
    (export.main, "python -m sft_sweep.export run_dir=outputs/runs/<run> [dtype=float32]"),
    (chat.main, "python -m sft_sweep.chat run_dir=outputs/runs/<run> [max_new_tokens=256] [probes=false]"),
    (reproduce.main, "usage: python -m sft_sweep.reproduce [-h] [--best] path"),
    (data_cli.main, "python -m sft_sweep.data check path/to/file.jsonl"),
])
def test_help(main, usage, capsys):
    assert exit_code(main, ["--help"]) == 0
    out = capsys.readouterr()
    assert usage in out.out and out.err == ""


def test_training_entrypoint_help(capsys):
    assert run_cli("--help") == 0
    out = capsys.readouterr().out  # Hydra's own help, with our header and groups
    assert out.startswith("python -m sft_sweep [group=option ...] [key=value ...]") and "lora: lora, none, qlora" in out


@pytest.mark.parametrize("main", [export.main, chat.main])
def test_bad_arguments_are_one_line(main, capsys):
    assert main(["outputs/runs/x"]) == 2
    assert capsys.readouterr().err == "error: expected key=value, got 'outputs/runs/x' (see --help)\n"
    assert main([]) == 2
    assert capsys.readouterr().err == "error: missing run_dir=... (see --help)\n"
