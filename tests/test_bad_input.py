"""Bad input as a new user would give it: each is one line on stderr naming the key, file or row, exit code 2,
and nothing half-written left behind (no finished-looking run, no half checkpoint, no partial cache)."""

import errno
import json
import os

import pytest
import transformers

from tests.helpers import TINY, read, run_cli


def one_line_error(capsys) -> str:
    """The error line (stderr's last; progress bars of data preparation may come before it), no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: ")
    return line.removeprefix("error: ")


def chat_row(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"What is {i} + 1?"},
                         {"role": "assistant", "content": str(i + 1)}]}


def test_max_length_below_the_chat_templates_own_header(tmp_path, capsys):
    assert run_cli(f"hydra.run.dir={tmp_path / 'r'}", f"data.cache_dir={tmp_path / 'cache'}", *TINY,
                   "trainer.max_length=4") == 2
    message = one_line_error(capsys)
    assert message.startswith("trainer.max_length=4 is shorter than the chat template's own header")
    assert read(tmp_path / "r" / "run_manifest.json")["status"] == "failed"


def test_an_output_dir_that_cannot_be_written(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert run_cli(f"hydra.run.dir={blocker / 'run'}", *TINY) == 2
    assert one_line_error(capsys).startswith(f"cannot write the run dir {blocker / 'run'}: ")


def test_an_empty_data_file(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert run_cli(f"hydra.run.dir={tmp_path / 'r'}", f"data.cache_dir={tmp_path / 'cache'}", "data=local",
                   f"data.path={empty}") == 2
    assert one_line_error(capsys) == f"{empty}: no data to train on: it holds no rows"
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.arrow"))


def test_a_data_file_that_is_all_duplicates(tmp_path, capsys):
    same = tmp_path / "same.jsonl"
    same.write_text("".join(json.dumps(chat_row(1)) + "\n" for _ in range(50)))
    assert run_cli(f"hydra.run.dir={tmp_path / 'r'}", f"data.cache_dir={tmp_path / 'cache'}", "data=local",
                   f"data.path={same}") == 2
    message = one_line_error(capsys)
    assert message == f"{same}: no data to train on: only 1 distinct row(s) left after removing 49 exact duplicates"


def test_a_sweep_that_trains_by_epochs_cannot_have_hyperband_stop_trials_by_steps(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    assert run_cli("-m", "hparams_search=optuna", "trainer.max_steps=-1", f"hydra.sweep.dir={sweep}") == 2
    # (the preset's full budget is trainer.max_steps)
    assert one_line_error(capsys) == ("hydra.sweeper.pruner.max_resource=-1: a number of steps (a positive integer), "
                                      "or auto")
    assert not sweep.exists()  # nothing written


@pytest.mark.slow
def test_a_full_disk_while_saving_a_checkpoint(tmp_path, capsys, monkeypatch):
    def no_space(self, output_dir):  # after weights and optimizer, before trainer_state.json: a half checkpoint
        raise OSError(errno.ENOSPC, "No space left on device", f"{output_dir}/rng_state.pth")

    monkeypatch.setattr(transformers.Trainer, "_save_rng_state", no_space)
    run_dir = tmp_path / "r"
    assert run_cli(f"hydra.run.dir={run_dir}", *TINY, "trainer.save_steps=4", "eval.enabled=false") == 2
    message = one_line_error(capsys)
    assert message.startswith(f"no space left on device writing {run_dir / 'checkpoints' / 'checkpoint-4'}")
    assert not (run_dir / "checkpoints" / "checkpoint-4").exists()  # the half checkpoint is removed
    assert read(run_dir / "run_manifest.json")["status"] == "failed" and not (run_dir / "metrics.json").exists()


def test_a_mandatory_key_left_unset_is_one_line_and_nothing_is_written(tmp_path, capsys):
    assert run_cli(f"hydra.run.dir={tmp_path / 'r'}", "data=local") == 2
    assert one_line_error(capsys) == "data.path must be set (e.g. data.path=/data/chats.jsonl): the chosen config " \
                                     "leaves it ???"
    assert not (tmp_path / "r").exists()  # checked before Hydra writes the run dir


@pytest.mark.parametrize("override, message", [
    ("+data.pth=x.jsonl", "data.pth is not a key of the data group (did you mean data.path?)"),
    ("+model.nam_or_path=x", "model.nam_or_path is not a key of the model group (did you mean model.name_or_path?)"),
    ("model.name_or_path=/nonexistent", "model.name_or_path=/nonexistent: this model preset builds a random-init model "
                                        "from model.config and would ignore it; load weights with a hub preset "
                                        "(model=qwen3_4b model.name_or_path=...) or set model.config=null"),
    ("optimized_metric=bench_gsm8k_exact_match", "optimized_metric=bench_gsm8k_exact_match: a benchmark score, but "
                                                 "eval.benchmarks=[] does not run its task (bench_<task>_<metric>: "
                                                 "add the task to eval.benchmarks)"),
])
def test_a_key_the_config_would_ignore_is_refused(override, message, tmp_path, capsys):
    assert run_cli(f"hydra.run.dir={tmp_path / 'r'}", f"data.cache_dir={tmp_path / 'cache'}", override) == 2
    assert one_line_error(capsys) == message
    assert not (tmp_path / "cache").exists()  # before any heavy work


FULL_DISK = """
import os, runpy, sys
sys.argv = ["sft_sweep", *sys.argv[1:]]
runpy.run_module("sft_sweep", run_name="__main__")
"""


@pytest.mark.slow
def test_a_real_full_disk_is_one_line_and_leaves_no_half_checkpoint(tmp_path):
    """The run dir on a 4 MB tmpfs (in a mount namespace of its own): the base model (1 MB) and checkpoint-4 (2 MB)
    fit, checkpoint-8 does not -- torch's writer then fails with its own RuntimeError, not ENOSPC."""
    import shutil
    import subprocess
    import sys

    from tests.helpers import env_without_network

    if os.geteuid() != 0 or shutil.which("unshare") is None or subprocess.run(
            ["unshare", "--mount", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs root and a mount namespace (unshare --mount) for a small tmpfs")
    disk = tmp_path / "small_disk"
    disk.mkdir()
    run_dir = disk / "run"
    script = tmp_path / "run.py"
    script.write_text(FULL_DISK)
    args = [f"hydra.run.dir={run_dir}", f"data.cache_dir={tmp_path / 'cache'}", *TINY, "trainer.save_steps=4",
            "trainer.save_total_limit=null", "eval.enabled=false"]
    # (what is left on the tmpfs is listed before it goes: the checkpoints, the manifest's status)
    after = (f'rc=$?; ls {run_dir / "checkpoints"}; grep -o \'"status": "[a-z]*"\' {run_dir / "run_manifest.json"}; '
             f'exit $rc')
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           f'mount -t tmpfs -o size=4m tmpfs {disk} && "$@"; {after}', "sh", sys.executable,
                           str(script), *args], capture_output=True, text=True, timeout=600,
                          env=env_without_network(), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    left = proc.stdout.splitlines()[-3:]
    assert left == ["README.md", "checkpoint-4", '"status": "failed"']  # no half checkpoint; the failure recorded
    assert "Traceback" not in proc.stderr and "Logging error" not in proc.stderr
    [line] = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert line.startswith(f"error: no space left on device writing {run_dir / 'checkpoints' / 'checkpoint-8'}; "
                           f"removed 1 half-written checkpoint(s); free space and run the same command again to "
                           f"resume from {run_dir / 'checkpoints' / 'checkpoint-4'}"), line
