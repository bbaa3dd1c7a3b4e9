"""Merge a run's LoRA adapter into its base model and save it: `<run>/merged`.

    python -m sft_sweep.export run_dir=outputs/runs/<run> [dtype=float32]

For QLoRA the base is reloaded unquantized before merging (merging into 4-bit weights would round).
Saves safetensors weights, the tokenizer and the chat template.
"""

import sys
from pathlib import Path

from sft_sweep.errors import UserError
from sft_sweep.load_run import load_run


def export(run_dir: Path, dtype: str = "auto") -> Path:
    model, tokenizer = load_run(run_dir, dtype)
    if not hasattr(model, "merge_and_unload"):
        raise UserError(f"{run_dir} is a full fine-tuning run: its model/ is already a plain model")
    merged = model.merge_and_unload()
    out = run_dir / "merged"
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def parse_args(argv: list[str], required: tuple[str, ...], defaults: dict) -> dict:
    """key=value arguments (Hydra style) for the small CLIs."""
    args = dict(defaults)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise UserError(f"expected key=value, got {arg!r}")
        args[key] = value
    missing = [k for k in required if k not in args]
    if missing:
        raise UserError(f"missing {', '.join(f'{k}=...' for k in missing)}")
    return args


def main(argv: list[str]) -> int:
    try:
        args = parse_args(argv, ("run_dir",), {"dtype": "auto"})
        out = export(Path(args["run_dir"]), args["dtype"])
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"merged model written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
