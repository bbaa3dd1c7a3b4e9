"""launch/multi_gpu.sh: one run data-parallel over 2 processes (CPU processes over gloo here)."""

import json
import os
import shlex
import subprocess

import pytest

from tests.helpers import REPO, run_cli

STEPS = ["trainer.max_steps=4", "trainer.eval_steps=4", "data.val_ratio=0", "data.min_val_size=16",
         "eval.enabled=false"]


@pytest.mark.slow
def test_two_processes_train_one_run_data_parallel(tmp_path):
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    proc = subprocess.run(["bash", "launch/multi_gpu.sh", "2", *STEPS], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "RUN_DIR": str(ddp_dir), "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert run_cli(f"hydra.run.dir={single_dir}", *STEPS) == 0
    ddp = json.loads((ddp_dir / "metrics.json").read_text())
    single = json.loads((single_dir / "metrics.json").read_text())
    assert json.loads((ddp_dir / "run_manifest.json").read_text())["hardware"]["world_size"] == 2
    assert ddp["global_step"] == single["global_step"] == 4
    # each step saw two batches (one per rank): about twice the tokens of one process
    assert ddp["train_tokens"] > 1.5 * single["train_tokens"]
    assert (ddp_dir / "adapter" / "adapter_model.safetensors").is_file()
    # the recorded command runs it again as it ran: data-parallel over two processes -- the command the launch
    # script ran (torchrun, from the repo root), but for the run dir it fixed
    command = json.loads((ddp_dir / "run_manifest.json").read_text())["command"]
    assert command == shlex.join(["torchrun", "--standalone", "--nproc_per_node=2", "-m", "sft_sweep", *STEPS])
