"""Merge a run's LoRA adapter into its base model and save it in <run>/merged.

    python -m sft_sweep.export run_dir=outputs/runs/<run> [dtype=float32]

For QLoRA the base is reloaded unquantized before merging (merging into 4-bit weights would round).
Saves safetensors weights, the tokenizer and the chat template.
"""

import sys
from pathlib import Path

from sft_sweep.config import parse_cli_args
from sft_sweep.console import cli_logging
from sft_sweep.errors import UserError
from sft_sweep.run_dir import RunDir


def export(run_dir: RunDir, dtype: str = "auto") -> Path:
    model, tokenizer = run_dir.load_model(dtype)
    if not hasattr(model, "merge_and_unload"):
        raise UserError(f"{run_dir.path} is a full fine-tuning run: its model/ is already a plain model")
    merged = model.merge_and_unload()
    merged.save_pretrained(run_dir.merged, safe_serialization=True)
    tokenizer.save_pretrained(run_dir.merged)
    return run_dir.merged


def main(argv: list[str]) -> int:
    try:
        args = parse_cli_args(argv, __doc__, ("run_dir",), {"dtype": "auto"})
        cli_logging()
        out = export(RunDir(args["run_dir"]), args["dtype"])
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"merged model written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
