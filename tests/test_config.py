"""Every option of every group composes and builds its HF/PEFT/TRL objects (no download)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import LoraConfig
from transformers import BitsAndBytesConfig
from trl import SFTConfig

from sft_sweep.model import build_lora_config, build_quantization_config, resolve_attn_implementation, resolve_dtype
from sft_sweep.sft_config import build_sft_config
from tests.helpers import REPO, compose_cfg, env_without_network, plain

CONF = REPO / "conf"
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml") if p.stem != "hub_defaults")
REAL_MODELS = [m for m in MODELS if m != "tiny"]


def sft_config(c, tmp_path) -> SFTConfig:
    return build_sft_config(c["optim"], c["trainer"], output_dir=str(tmp_path), seed=c["seed"],
                            report_to=[], run_name="t")


def test_every_model_preset_is_proven_on_its_template():
    """A preset added to conf/model/ without its template, tokenizer and architecture in tests/test_presets.py (where
    its rendering, mask and 10 training steps are checked) fails here."""
    from tests.test_presets import PRESETS

    assert MODELS and set(MODELS) == set(PRESETS)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("lora", ["lora", "qlora", "none"])
def test_every_model_and_lora_option_builds(model, lora, tmp_path):
    c = plain(f"model={model}", f"lora={lora}")
    lora_config = build_lora_config(c["lora"])
    quant = build_quantization_config(c["lora"])
    args = sft_config(c, tmp_path)
    assert args.bf16 is (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    assert args.seed == 42 and args.lr_scheduler_type == "cosine" and args.weight_decay == 0.01
    assert args.warmup_steps == 0.03  # optim.warmup_steps: a ratio of the total steps (< 1)
    if lora == "none":
        assert lora_config is None and quant is None
        assert args.learning_rate == (5e-3 if model == "tiny" else 2e-5)
        return
    assert isinstance(lora_config, LoraConfig)
    assert (lora_config.r, lora_config.lora_alpha, lora_config.lora_dropout) == (16, 32, 0.0)
    assert lora_config.target_modules == "all-linear"
    assert args.learning_rate == (5e-3 if model == "tiny" else 2e-4)
    if lora == "qlora":
        assert isinstance(quant, BitsAndBytesConfig)
        assert quant.load_in_4bit and quant.bnb_4bit_quant_type == "nf4" and quant.bnb_4bit_use_double_quant
        assert quant.bnb_4bit_compute_dtype == torch.bfloat16
    else:
        assert quant is None


@pytest.mark.parametrize("model", REAL_MODELS)
def test_real_presets_name_a_hub_model_and_cpu_defaults(model):
    c = plain(f"model={model}")["model"]
    assert "/" in c["name_or_path"] and c["config"] is None
    assert c["use_cache"] is False and c["train_in_full"] is None
    assert plain(f"model={model}")["lora"]["target_modules"] == "all-linear"
    if not torch.cuda.is_available():
        assert resolve_dtype(c["dtype"]) == torch.float32
        assert resolve_attn_implementation(c["attn_implementation"]) == "sdpa"


def test_lora_rank_from_command_line_and_alpha_follows():
    assert build_lora_config(plain("lora.r=32")["lora"]).lora_alpha == 64
    c = build_lora_config(plain("lora.r=32", "lora.lora_alpha=8")["lora"])
    assert (c.r, c.lora_alpha) == (32, 8)
    assert build_lora_config(plain("lora=qlora", "lora.r=64")["lora"]).lora_alpha == 128


def test_lora_lists_are_plain_python():
    # PEFT checks isinstance(x, list): an OmegaConf ListConfig would slip through as a non-list.
    c = build_lora_config(plain("model=tiny")["lora"])
    assert type(c.modules_to_save) is list and c.modules_to_save == ["embed_tokens", "lm_head"]


def test_optim_options(tmp_path):
    assert sft_config(plain("optim=paged_adamw_8bit"), tmp_path).optim == "paged_adamw_8bit"
    args = sft_config(plain("optim.learning_rate=1e-4", "optim.warmup_steps=0.1"), tmp_path)
    assert args.learning_rate == 1e-4 and args.warmup_steps == 0.1


def test_trainer_defaults(tmp_path):
    args = sft_config(plain("model=qwen3_4b"), tmp_path)
    assert args.assistant_only_loss is False  # our own mask travels in the dataset instead (data.train_on)
    assert (args.save_total_limit, args.packing, args.eval_on_start) == (2, False, True)
    assert (args.num_train_epochs, args.per_device_train_batch_size, args.max_length) == (1, 8, 1024)
    # the tiny preset sets what a random-init model needs: many packed short rows
    tiny = sft_config(plain(), tmp_path)
    assert (tiny.num_train_epochs, tiny.per_device_train_batch_size, tiny.max_length, tiny.packing) == (7, 2, 256, True)
    assert tiny.learning_rate == 5e-3
    assert sft_config(plain("trainer.max_steps=200"), tmp_path).max_steps == 200


def test_logger_options():
    assert plain("logger=none")["logger"] == {}
    w = plain("logger=wandb", "logger.tags=[a,b]")["logger"]
    assert w["project"] == "sft-sweep" and w["tags"] == ["a", "b"] and w["mode"] is None


@pytest.mark.parametrize("option", ["sample", "alpaca", "sharegpt", "mixture", "mixture_resample"])
def test_bundled_data_options_point_at_shipped_files(option):
    data = plain(f"data={option}")["data"]
    assert data["sources"] and all(Path(s["path"]).is_file() for s in data["sources"])
    assert data["train_on"] == "all_assistant" and data["on_error"] == "skip"


def test_data_local_and_hub_options():
    local = plain("data=local", "data.path=/x/y.jsonl")["data"]
    assert [s["path"] for s in local["sources"]] == ["/x/y.jsonl"] and local["val_ratio"] == 0.1
    assert plain("data=dl_sft")["data"]["sources"][0]["path"] == "banghua/DL-SFT-Dataset"
    mixture = plain("data=mixture")["data"]
    assert [s["weight"] for s in mixture["sources"]] == [0.6, 0.3, 0.1] and mixture["mix"] == "interleave"


def test_run_dirs_go_under_outputs():
    cfg = compose_cfg(hydra=True)
    assert cfg.hydra.run.dir.startswith("outputs/runs/")
    assert cfg.hydra.sweep.dir.startswith("outputs/sweeps/")


def test_unknown_group_option_gives_hydras_message():
    proc = subprocess.run([sys.executable, "-m", "sft_sweep", "model=nope"], cwd=REPO, capture_output=True,
                          text=True, env=env_without_network(), timeout=120)
    assert proc.returncode != 0
    assert "Could not find 'model/nope'" in proc.stderr
    assert "qwen3_4b" in proc.stderr  # Hydra lists the available options


@pytest.mark.parametrize("search, name", [("optuna", "sft_sweep_optuna"), ("asha", "sft_sweep_asha")])
def test_sweeps_keep_a_stable_dir_so_the_same_command_resumes(search, name):
    cfg = compose_cfg(f"hparams_search={search}", hydra=True)
    assert cfg.hydra.sweep.dir == f"outputs/sweeps/{name}"  # not the default's timestamped dir
    assert dict(cfg.hydra.sweeper.params) == {  # the one search space both sweepers share
        "optim.learning_rate": "tag(log, interval(1e-5, 1e-3))", "lora.r": "choice(8, 16, 32, 64)",
        "trainer.per_device_train_batch_size": "choice(2, 4, 8)", "optim.warmup_steps": "interval(0.0, 0.2)"}


def test_both_sweepers_stop_trials_first_at_the_first_evaluation_and_run_them_to_max_steps():
    overrides = ("trainer.max_steps=120", "trainer.eval_steps=10")
    pruner = compose_cfg("hparams_search=optuna", *overrides, hydra=True).hydra.sweeper.pruner
    assert (pruner.min_resource, pruner.max_resource, pruner.reduction_factor) == (10, 120, 3)
    scheduler = compose_cfg("hparams_search=asha", *overrides, hydra=True).hydra.sweeper.scheduler
    assert (scheduler.grace_period, scheduler.max_t, scheduler.reduction_factor) == (10, 120, 4)


def test_transformers_bound_is_the_first_release_with_activation_checkpointing():
    import dataclasses
    import tomllib

    import transformers
    from packaging.version import Version

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "transformers>=5.23,<6" in deps
    assert Version(transformers.__version__) >= Version("5.23")
    assert "activation_checkpointing" in {f.name for f in dataclasses.fields(SFTConfig)}


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU default")
def test_cuda_only_kernels_stay_off_on_cpu(tmp_path):
    args = sft_config(plain(), tmp_path)
    assert args.use_liger_kernel is False and args.bf16 is False
