"""The checks that run before any heavy work: a mandatory key left unset, unknown or impossible settings (each
one line naming the key), a finished run in the way. Kept apart from config.py, which everything imports: these
read what the data, model and packing modules accept."""

import dataclasses
import difflib

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from sft_sweep import metric_names as names
from sft_sweep.errors import UserError, exit_in_one_line
from sft_sweep.run_dir import RunDir

POSITIVE = {"optim.learning_rate": (int, float), "trainer.per_device_train_batch_size": int,
            "trainer.per_device_eval_batch_size": int, "trainer.gradient_accumulation_steps": int,
            "trainer.max_length": int, "trainer.logging_steps": (int, float), "trainer.eval_steps": (int, float),
            "trainer.save_steps": (int, float)}
NON_NEGATIVE = ("optim.weight_decay", "optim.warmup_steps", "optim.max_grad_norm")


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _unknown_keys(group: str, keys, allowed: set[str], feeds: str, what: str = "an argument of") -> None:
    for key in keys:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f" (did you mean {group}.{close[0]}?)" if close else ""
            raise UserError(f"{group}.{key} is not {what} {feeds}{hint}")


def missing_values(cfg: DictConfig) -> list[str]:
    """Mandatory keys (`???`) still unset in a composed config, as dotted keys (Hydra's own config aside)."""
    missing = []

    def walk(node, prefix):
        for key, value in node.items() if isinstance(node, dict) else enumerate(node):
            if value == "???":
                missing.append(f"{prefix}{key}")
            elif isinstance(value, (dict, list)):
                walk(value, f"{prefix}{key}.")

    walk({k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k != "hydra"}, "")
    return missing


def check_mandatory(cfg: DictConfig) -> None:
    """One line naming a mandatory key left unset (data=local without data.path), before anything is written."""
    if missing := missing_values(cfg):
        examples = {"data.path": " (e.g. data.path=/data/chats.jsonl)", "model.name_or_path":
                    " (a hub id or a local model dir)"}
        raise UserError(f"{missing[0]} must be set{examples.get(missing[0], '')}: the chosen config leaves it ???")


def _get(c: dict, dotted: str):
    node = c
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def validate(c: dict) -> None:
    """One-line errors for config values the libraries would only reject after data prep and model
    load, with a traceback (or never: a negative learning rate trains backwards)."""
    # Deferred: RefuseFinishedRunDir (below) runs in every run before the run's logging is set up, where
    # importing peft (and so bitsandbytes) would print their import-time warnings on the console.
    from peft import LoraConfig
    from trl import SFTConfig

    from sft_sweep.data.prepare import KEYS as DATA_KEYS
    from sft_sweep.model import KEYS as MODEL_KEYS
    from sft_sweep.model import NOT_LORA_CONFIG, resolve_attn_implementation
    from sft_sweep.packing import check_isolated

    _unknown_keys("data", c["data"], DATA_KEYS, "the data group", "a key of")
    _unknown_keys("model", c["model"], MODEL_KEYS, "the model group", "a key of")
    if c["model"]["config"] and c["model"]["name_or_path"]:
        raise UserError(f"model.name_or_path={c['model']['name_or_path']}: this model preset builds a random-init "
                        f"model from model.config and would ignore it; load weights with a hub preset "
                        f"(model=qwen3_4b model.name_or_path=...) or set model.config=null")
    _unknown_keys("optim", c["optim"], _fields(SFTConfig), "trl.SFTConfig")
    ours = ("on_oom", "by_data_size")  # trainer keys sft-sweep reads itself (trainer.py, sizing.py)
    _unknown_keys("trainer", (k for k in c["trainer"] if k not in ours), _fields(SFTConfig), "trl.SFTConfig")
    if c["trainer"].get("on_oom", "retry") not in ("retry", "fail"):
        raise UserError(f"trainer.on_oom={c['trainer']['on_oom']!r}: expected retry or fail")
    if c["lora"]:
        _unknown_keys("lora", (k for k in c["lora"] if k not in NOT_LORA_CONFIG), _fields(LoraConfig),
                      "peft.LoraConfig")
        r = c["lora"].get("r")
        if not isinstance(r, int) or isinstance(r, bool) or r < 1:
            raise UserError(f"lora.r={r!r}: the LoRA rank must be a positive integer")
    for key, kind in POSITIVE.items():
        value = _get(c, key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool) or value <= 0):
            raise UserError(f"{key}={value!r}: must be a positive number")
    for key in NON_NEGATIVE:
        value = _get(c, key)
        if value is not None and (not isinstance(value, (int, float)) or value < 0):
            raise UserError(f"{key}={value!r}: must be zero or positive")
    if c["trainer"].get("packing"):
        check_isolated(resolve_attn_implementation(c["model"]["attn_implementation"]))
    steps, epochs = c["trainer"].get("max_steps", -1), c["trainer"].get("num_train_epochs", 1)
    if not isinstance(steps, int) or steps == 0 or (steps < 0 and not epochs > 0):
        raise UserError(f"trainer.max_steps={steps!r}, trainer.num_train_epochs={epochs!r}: "
                        f"set max_steps > 0, or max_steps=-1 and num_train_epochs > 0")
    tasks = c["eval"].get("benchmarks") or []  # a benchmark's score exists only where the run scores its task
    for name in names.objectives(c["optimized_metric"]):
        if name.startswith(names.BENCH_PREFIX) and not any(name.startswith(names.bench(t, "")) for t in tasks):
            raise UserError(f"optimized_metric={name}: a benchmark score, but eval.benchmarks={list(tasks)} does not "
                            f"run its task (bench_<task>_<metric>: add the task to eval.benchmarks)")


class RefuseFinishedRunDir(Callback):
    """Hydra callback (conf/hydra/default.yaml): checks a single run's config and dir before Hydra writes
    its .hydra/ files into it -- a mandatory key left unset, a finished run there. Sweep trials always get
    fresh dirs."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        try:
            check_mandatory(config)
            run_dir = RunDir(config.hydra.run.dir)
            run_dir.refuse_if_finished(config.get("overwrite", False))
            run_dir.check_writable()
        except UserError as exc:
            exit_in_one_line(exc)  # Hydra only warns about a callback's exceptions
