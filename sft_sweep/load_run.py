"""Load a finished run's model: base + adapter (or the fully fine-tuned model), and its tokenizer."""

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sft_sweep.errors import UserError
from sft_sweep.model import resolve_dtype


def load_run(run_dir: Path, dtype: str = "auto"):
    """(model, tokenizer) of a finished run. A QLoRA adapter loads over an unquantized base."""
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file():
        raise UserError(f"{run_dir} holds no finished run (no metrics.json)")
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    weights = run_dir / metrics["weights_dir"]
    tokenizer = AutoTokenizer.from_pretrained(weights)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if metrics["weights_dir"] == "adapter":
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(metrics["base_model"], dtype=resolve_dtype(dtype)).to(device)
        model = PeftModel.from_pretrained(base, weights)
    else:
        model = AutoModelForCausalLM.from_pretrained(weights, dtype=resolve_dtype(dtype)).to(device)
    model.eval()
    return model, tokenizer
