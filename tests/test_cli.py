"""Every command-line tool answers --help with its usage (exit 0) and bad arguments with one line."""

import pytest

from sft_sweep import chat, evaluate, export, reproduce, serve
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
    (serve.main, "python -m sft_sweep.serve run_dir=outputs/runs/<run> [engine=auto|vllm|transformers]"),
    (reproduce.main, "usage: python -m sft_sweep.reproduce [-h] [--best] [--trial TRIAL] path"),
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


@pytest.mark.parametrize("main", [export.main, chat.main, serve.main])
def test_bad_arguments_are_one_line(main, capsys):
    assert main(["outputs/runs/x"]) == 2
    assert capsys.readouterr().err == "error: expected key=value, got 'outputs/runs/x' (see --help)\n"
    assert main([]) == 2
    assert capsys.readouterr().err == "error: missing run_dir=... (see --help)\n"


LIBRARY_NOISE = ("Warning", "warnings.warn", "it/s]", "examples/s]", "Failed to load", "[bitsandbytes", "[py.warnings")


@pytest.mark.slow
def test_a_run_prints_only_our_lines_and_the_libraries_go_to_train_log(tmp_path):
    """The console has sft-sweep's lines only (no library warning, no progress bar); train.log keeps the
    libraries' records; -v shows them on the console too."""
    import subprocess
    import sys

    from tests.helpers import REPO, TINY, env_without_network

    def run(*extra):
        run_dir = tmp_path / f"run{len(extra)}"
        proc = subprocess.run([sys.executable, "-m", "sft_sweep", *extra, f"hydra.run.dir={run_dir}", *TINY,
                               "trainer.max_steps=2", "eval.max_samples=4"], cwd=REPO, env=env_without_network(),
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout + proc.stderr, (run_dir / "train.log").read_text()

    console, log = run()
    noise = [line for line in console.splitlines() if any(n in line for n in LIBRARY_NOISE)]
    assert noise == [] and "run summary" in console and "step 2/2" in console
    assert "[py.warnings][WARNING]" in log  # the libraries' warnings are kept in the run's log
    verbose, _ = run("-v")
    assert any(n in verbose for n in LIBRARY_NOISE)
