"""Real training runs of the embedded tiny model through the real entrypoint."""

import os
import shlex
import stat
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import TrainerCallback

from sft_sweep.config import asset_path
from sft_sweep.data.mixing import dedup
from sft_sweep.data.prepare import Problems, load_rows
from sft_sweep.recipe import setup
from sft_sweep.run_dir import RunDir
from tests.helpers import TINY, TINY_RUN, losses, plain, read, run_cli
from tests.wandb_records import history


def frozen_and_trainable(model):
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return frozen, trainable


@pytest.mark.slow
def test_run_dir_holds_every_record(tiny_run):
    for name in [".hydra/config.yaml", ".hydra/overrides.yaml", "adapter/adapter_config.json",
                 "adapter/adapter_model.safetensors", "adapter/tokenizer.json", "adapter/chat_template.jinja",
                 "base_model/model.safetensors", "metrics.json", "log_history.json", "run_manifest.json", "train.log"]:
        assert (tiny_run / name).is_file(), name
    m, config = read(tiny_run / "metrics.json"), yaml.safe_load((tiny_run / ".hydra/config.yaml").read_text())
    assert m["global_step"] == config["trainer"]["max_steps"] and m["train_tokens"] > 0 and m["train_tokens_per_s"] > 0
    assert m["eval_loss"] < m["first_eval_loss"]  # it learns, even in a few steps
    assert m["peak_memory"]["cpu_rss_mib"] > 0 and m["train_runtime_s"] > 0
    # both train losses, named for what they are
    history = read(tiny_run / "log_history.json")
    assert m["train_loss_last"] == [h["loss"] for h in history if "loss" in h][-1]
    assert m["train_loss_mean"] == history[-1]["train_loss"] and m["train_loss_mean"] != m["train_loss_last"]
    manifest = read(tiny_run / "run_manifest.json")
    assert manifest["status"] == "completed" and manifest["seed"] == 42
    assert manifest["config"]["lora"]["r"] == 16  # resolved, not ${...}
    assert set(manifest["versions"]) >= {"torch", "transformers", "trl", "peft", "datasets", "hydra-core"}
    assert {"commit", "dirty"} <= set(manifest["git"]) and manifest["hardware"]["cpu_count"] >= 1


@pytest.mark.slow
def test_records_follow_the_umask(tiny_run):
    umask = os.umask(0)
    os.umask(umask)
    for name in ("metrics.json", "log_history.json", "run_manifest.json"):
        assert stat.S_IMODE((tiny_run / name).stat().st_mode) == 0o666 & ~umask, name


@pytest.mark.slow
def test_checkpoints_readme_names_the_base_model(tiny_run):
    readme = (tiny_run / "checkpoints" / "README.md").read_text()
    assert f"fine-tuning `{tiny_run / 'base_model'}`" in readme and "None" not in readme
    assert read(tiny_run / "run_manifest.json")["command"] in readme


@pytest.mark.slow
def test_the_recorded_command_runs_the_same_run_again(tiny_run, tmp_path):
    command = read(tiny_run / "run_manifest.json")["command"]
    assert command == shlex.join(["python", "-m", "sft_sweep", *TINY_RUN])  # what was typed, without the run dir
    args = shlex.split(command)[3:]
    assert run_cli(*args, f"hydra.run.dir={tmp_path / 'pasted'}") == 0
    assert losses(tmp_path / "pasted") == losses(tiny_run)


@pytest.mark.slow
def test_reproduce_from_saved_config_lands_in_outputs_runs_with_the_same_losses(tiny_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --config-path, as the README shows it
    (tmp_path / "runs").symlink_to(tiny_run.parent)
    assert run_cli("--config-path", f"runs/{tiny_run.name}/.hydra", "--config-name", "config") == 0
    [again] = list((tmp_path / "outputs" / "runs").iterdir())  # like any run, not outputs/<date>/<time>
    original, reproduced = losses(tiny_run), losses(again)
    steps = yaml.safe_load((tiny_run / ".hydra/config.yaml").read_text())["trainer"]["max_steps"]
    assert [s for s, _ in original] == list(range(2, steps + 1, 2)) == [s for s, _ in reproduced]  # every 2nd step
    for (_, a), (_, b) in zip(original, reproduced):
        assert abs(a - b) <= 1e-6
    assert abs(read(again / "metrics.json")["eval_loss"] - read(tiny_run / "metrics.json")["eval_loss"]) <= 1e-6
    # and the run dir it wrote is protected like any other
    assert run_cli("--config-path", f"runs/{tiny_run.name}/.hydra", "--config-name", "config",
                   f"hydra.run.dir={again}") == 2


@pytest.mark.slow
def test_finished_run_dir_is_never_overwritten(tiny_run, capsys):
    before = (tiny_run / ".hydra/config.yaml").read_text()
    stamp = (tiny_run / "metrics.json").stat().st_mtime_ns
    assert run_cli(f"hydra.run.dir={tiny_run}", *TINY, "lora.r=4") == 2
    assert f"{tiny_run} already holds a finished run" in capsys.readouterr().err
    assert (tiny_run / ".hydra/config.yaml").read_text() == before
    assert (tiny_run / "metrics.json").stat().st_mtime_ns == stamp


def test_a_failed_run_records_its_error(tmp_path, capsys):
    run_dir = tmp_path / "r"
    assert run_cli(f"hydra.run.dir={run_dir}", "data=local", f"data.path={tmp_path}/none.jsonl") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: data file not found: {tmp_path}/none.jsonl"]  # one line, nothing else
    manifest = read(run_dir / "run_manifest.json")
    assert manifest["status"] == "failed"
    assert manifest["error"] == f"UserError: data file not found: {tmp_path}/none.jsonl"
    assert f"run failed: UserError: data file not found: {tmp_path}/none.jsonl" in (run_dir / "train.log").read_text()
    assert not (run_dir / "metrics.json").exists()


@pytest.mark.parametrize("override, message", [
    ("optim.learning_rate=-1e-4", "optim.learning_rate=-0.0001: must be a positive number"),
    ("lora.r=0", "lora.r=0: the LoRA rank must be a positive integer"),
    ("+trainer.max_stpes=5", "trainer.max_stpes is not an argument of trl.SFTConfig (did you mean trainer.max_steps?)"),
    ("+lora.rank=8", "lora.rank is not an argument of peft.LoraConfig"),
    ("trainer.per_device_train_batch_size=0", "trainer.per_device_train_batch_size=0: must be a positive number"),
])
def test_bad_values_fail_in_one_line_before_any_heavy_work(override, message, tmp_path, capsys):
    run_dir, cache = tmp_path / "r", tmp_path / "cache"
    assert run_cli(f"hydra.run.dir={run_dir}", f"data.cache_dir={cache}", override) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {message}"]
    assert not cache.exists() and not (run_dir / "base_model").exists()  # no data prepared, no model built
    assert read(run_dir / "run_manifest.json")["status"] == "failed"


def test_an_uncached_preset_offline_fails_at_once_in_one_line(tmp_path):
    # An endpoint that refuses connections: what a machine without network sees, without retries.
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_OFFLINE", None)
    proc = subprocess.run([sys.executable, "-m", "sft_sweep", "model=qwen3_4b", f"hydra.run.dir={tmp_path / 'r'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()  # no retry warnings before it
    assert line.startswith("error: cannot load tokenizer 'Qwen/Qwen3-4B' from the local Hugging Face cache "
                           "(the hub is unreachable)") and line.endswith("set model.name_or_path to a local directory")


@pytest.mark.slow
def test_lora_trains_adapter_and_leaves_base_weights_unchanged(tmp_path):
    c = plain(*TINY)
    trainer, _ = setup(c, RunDir(tmp_path))
    frozen, trainable = frozen_and_trainable(trainer.model)
    assert any("lora_B" in n for n in trainable) and all("lora" not in n for n in frozen)
    assert all(trainable[n].abs().sum() == 0 for n in trainable if "lora_B" in n)  # PEFT starts B at zero
    trainer.train()
    after = dict(trainer.model.named_parameters())
    assert all(torch.equal(frozen[n], after[n]) for n in frozen)
    changed = [n for n in trainable if "lora_B" in n and not torch.equal(trainable[n], after[n])]
    assert len(changed) == len([n for n in trainable if "lora_B" in n])


@pytest.mark.slow
def test_lora_rank_32_from_command_line(tmp_path):
    run_dir = tmp_path / "r32"
    assert run_cli(f"hydra.run.dir={run_dir}", *TINY, "trainer.max_steps=2", "lora.r=32") == 0
    config = read(run_dir / "adapter/adapter_config.json")
    assert (config["r"], config["lora_alpha"]) == (32, 64)
    weights = load_file(run_dir / "adapter/adapter_model.safetensors")
    a = [w for n, w in weights.items() if n.endswith("q_proj.lora_A.weight")]
    assert a and all(w.shape == (32, 64) for w in a)
    assert yaml.safe_load((run_dir / ".hydra/overrides.yaml").read_text())[-1] == "lora.r=32"


@pytest.mark.slow
def test_full_fine_tuning_changes_the_weights(tmp_path):
    trainer, _ = setup(plain(*TINY, "lora=none", "trainer.max_steps=3"), RunDir(tmp_path))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    assert all(p.requires_grad for p in trainer.model.parameters())
    trainer.train()
    after = dict(trainer.model.named_parameters())
    assert sum(not torch.equal(before[n], after[n]) for n in before) == len(before)


@pytest.mark.slow
def test_qlora8_loads_the_base_in_8_bit_and_trains_the_adapter(tmp_path):
    import bitsandbytes as bnb

    trainer, _ = setup(plain(*TINY, "lora=qlora8", "trainer.max_steps=2", "trainer.eval_strategy=no",
                             "trainer.eval_on_start=false"), RunDir(tmp_path))
    linear8 = [m for m in trainer.model.modules() if isinstance(m, bnb.nn.Linear8bitLt)]
    assert len(linear8) == 2 * 7 and all(m.weight.dtype == torch.int8 for m in linear8)
    _, trainable = frozen_and_trainable(trainer.model)
    trainer.train()
    after = dict(trainer.model.named_parameters())
    assert any("lora_B" in n and not torch.equal(trainable[n], after[n]) for n in trainable)


@pytest.mark.slow
def test_qlora_on_cpu_quantizes_to_4bit_and_trains(tmp_path):
    import bitsandbytes as bnb

    trainer, _ = setup(plain(*TINY, "lora=qlora", "trainer.max_steps=4", "trainer.eval_steps=4"), RunDir(tmp_path))
    linear4 = [m for m in trainer.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(linear4) == 2 * 7  # q, k, v, o, gate, up, down in each of the 2 layers
    assert all(m.weight.quant_state.quant_type == "nf4" for m in linear4)
    packed_during_training = []

    class WatchLayout(TrainerCallback):
        def on_step_end(self, *args, **kwargs):
            packed_during_training.append(any(getattr(m.weight.quant_state, "packing_format_for_cpu", False)
                                              for m in linear4))

    trainer.add_callback(WatchLayout())
    result = trainer.train()
    assert result.global_step == 4 and torch.isfinite(torch.tensor(result.training_loss))
    # The evaluation before training must not leave the weights in bitsandbytes' inference-only
    # CPU layout, whose matmul has no gradient (the steps after it would train wrongly).
    assert packed_during_training == [False] * 4
    evals = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h]
    assert evals[-1] < evals[0]


@pytest.mark.slow
def test_wandb_offline_run_is_logged_and_closed(tmp_path):
    import wandb

    run_dir = tmp_path / "w"
    assert run_cli(f"hydra.run.dir={run_dir}", *TINY, "trainer.max_steps=2", "logger=wandb",
                   "logger.tags=[test]") == 0
    assert wandb.run is None  # closed by the task's finally
    offline = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))
    logged = {key: value for row in history(next(offline[0].glob("*.wandb"))) for key, value in row.items()}
    # the evaluation tables (one row per eval conversation, one per probe) and the training curve
    assert logged["eval/samples/_type"] == "table-file" and logged["eval/samples/nrows"] == 16
    assert logged["eval/probes/nrows"] == 5 and "train/loss" in logged  # the tiny preset's five probes
    # a failing run closes its W&B run too
    assert run_cli(f"hydra.run.dir={tmp_path / 'bad'}", "logger=wandb", "data=local",
                   f"data.path={tmp_path}/none.jsonl") == 2
    assert wandb.run is None


@pytest.mark.slow
def test_default_run_learns_its_tasks(tmp_path):
    """`python -m sft_sweep` as the README's first command: the embedded model learns the sample tasks."""
    assert run_cli(f"hydra.run.dir={tmp_path / 'default'}", f"data.cache_dir={tmp_path / 'cache'}") == 0
    m = read(tmp_path / "default" / "metrics.json")
    assert m["eval_loss"] <= 0.1 * m["first_eval_loss"]
    by_kind = m["eval_exact_match_by_tag"]
    # The README's promise, per task kind (thresholds below the measured figures: thread counts and load change
    # float reductions on the CPU, so a single answer may differ from run to run; a rate barely does).
    assert by_kind["sentiment"] >= 0.9 and by_kind["arithmetic"] >= 0.5
    assert by_kind["follow_up"] >= 0.3 and by_kind["zh"] >= 0.5
    assert set(by_kind) == {"arithmetic", "follow_up", "sentiment", "tool_call", "zh"}
    assert all(v == 0 for v in m["before_eval_exact_match_by_tag"].values())  # nothing of it before training
    # not a constant answer dressed up as valid JSON
    assert m["eval_json_validity"] == 1.0 and m["before_eval_json_validity"] == 0.0
    assert m["eval_answer_diversity"] >= 0.7 and not m["eval_collapsed_answers"]
    assert m["eval_top_answer_share"] < 0.2
    # the probes table: each probe, answered before and after
    probes = (tmp_path / "default" / "probes.md").read_text().splitlines()
    assert len(probes) == 2 + 5 and all(line.count(" | ") >= 2 for line in probes[2:])
    assert probes[2].startswith("| Anna has 3 pens and gets 4 more. How many pens does Anna have now? | ")


@pytest.mark.slow
def test_training_on_every_row_without_an_evaluation_set(tmp_path, capsys):
    run_dir = tmp_path / "all_rows"
    assert run_cli(f"hydra.run.dir={run_dir}", f"data.cache_dir={tmp_path / 'cache'}", *TINY, "trainer.max_steps=3",
                   "data.val_ratio=0", "data.min_val_size=0") == 0
    m = read(run_dir / "metrics.json")
    assert m["global_step"] == 3 and not any(k.startswith("eval_") for k in m)  # nothing was evaluated
    assert read(run_dir / "run_manifest.json")["status"] == "completed"
    assert "(no evaluation: every row trains)" in capsys.readouterr().out + (run_dir / "train.log").read_text()
    [prepared] = (tmp_path / "cache" / "prepared").iterdir()
    assert len((prepared / "validation.jsonl").read_text().splitlines()) == 0
    sample = load_rows({"path": asset_path("sample/chat.jsonl"), "format": "auto", "field_map": None,
                        "split": "train", "name": "sample"}, None, Problems("raise"))
    assert len((prepared / "train.jsonl").read_text().splitlines()) == len(dedup(sample)[0])  # every distinct row
