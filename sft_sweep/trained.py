"""A finished run as a model, for everything after training -- evaluation, chat, export (and, through the export,
serving): one loader, and the chat template settings the run was evaluated with. Its answers come from
generation.generate, the one generation loop."""

import torch
from peft import PeftConfig, PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from sft_sweep.errors import UserError
from sft_sweep.model import resolve_dtype
from sft_sweep.run_dir import RunDir


def load(run_dir: RunDir, dtype: str = "auto"):
    """(model, tokenizer) of a finished run, in eval mode, on the GPU when there is one: a (Q)LoRA adapter over its
    base loaded unquantized (the run's own random-init base_model/, which moves with the dir, else the hub id or
    path PEFT recorded), or the fully fine-tuned model."""
    if not run_dir.finished:
        raise UserError(f"{run_dir.path} holds no finished run (no {run_dir.metrics.name})")
    lora = run_dir.adapter.is_dir()
    weights = run_dir.weights(lora)
    tokenizer = AutoTokenizer.from_pretrained(weights)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if lora:
        base = (run_dir.base_model if run_dir.base_model.is_dir()
                else PeftConfig.from_pretrained(weights).base_model_name_or_path)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=resolve_dtype(dtype)).to(device)
        model = PeftModel.from_pretrained(model, weights)
    else:
        model = AutoModelForCausalLM.from_pretrained(weights, dtype=resolve_dtype(dtype)).to(device)
    return model.eval(), tokenizer


def template_kwargs(run_dir: RunDir, template: str) -> dict:
    """The keyword arguments the run's evaluation passed to the chat template (eval.enable_thinking), for those
    `template` reads: the prompt the run was evaluated on, which chat renders and export bakes in as defaults."""
    return settings(run_dir.saved_config().get("eval") or {}, template)


def settings(eval_cfg: dict, template: str) -> dict:
    """The chat template arguments of the `eval` group (eval.enable_thinking) that `template` reads."""
    kwargs = {"enable_thinking": bool(eval_cfg.get("enable_thinking", False))}
    return {key: value for key, value in kwargs.items() if key in template}
