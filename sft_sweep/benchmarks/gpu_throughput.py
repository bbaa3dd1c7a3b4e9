"""Training throughput and memory on a GPU: sft-sweep against a plain TRL script and a plain HF/PEFT loop with the
model's own cross-entropy (full logits, as LLaMA-Factory and Axolotl train), same rows, same model.

    python -m sft_sweep.benchmarks.gpu_throughput                       # Qwen3-0.6B and -4B architectures, CUDA
    python -m sft_sweep.benchmarks.gpu_throughput --archs 4b --steps 40 --repeats 2 --out gpu.json
    python -m sft_sweep.benchmarks.gpu_throughput --smoke               # the tiny model, a few steps (CPU is fine)

Models are built from the real Qwen3 architectures' configs with random weights (no download) and the
real Qwen3 tokenizer (../shared/data/tokenizers/qwen3); rows are the Alpaca demo
(../shared/data/llamafactory/alpaca_en_demo.json, else the bundled sample). Both sides: LoRA r=16
on every linear layer, max_length 1024, batch 8, bf16 where supported, `--steps` steps of which the
first `--warmup` are not timed. The plain script is a few lines of TRL with its defaults
(`packing=True` is TRL's own padding-free packing). Each measurement runs in a fresh process,
ours and plain interleaved. Reports real (non-padding) tokens/s, step time, peak memory and
MFU = 4 * N_linear * tokens / seconds / peak FLOP/s (989e12: H100 bf16 dense; forward 2N +
backward 2N per token, frozen weights get no gradient).
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
QWEN3 = {"model_type": "qwen3", "vocab_size": 151936, "max_position_embeddings": 40960, "rope_theta": 1_000_000,
         "rms_norm_eps": 1e-6, "num_key_value_heads": 8, "head_dim": 128, "tie_word_embeddings": True}
ARCHS = {
    "0.6b": {**QWEN3, "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28,
             "num_attention_heads": 16},
    "4b": {**QWEN3, "hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
           "num_attention_heads": 32},
}
PEAK_FLOPS = 989e12


def spec(arch: str, packed: bool, steps: int, warmup: int, smoke: bool) -> dict:
    if smoke:
        from sft_sweep.config import asset_path

        return {"arch": "tiny", "config": None, "tokenizer": None, "data": asset_path("sample/alpaca.json"),
                "packed": packed, "steps": steps, "warmup": warmup, "batch": 2, "max_length": 256}
    tokenizer = SHARED / "tokenizers" / "qwen3"
    alpaca = SHARED / "llamafactory" / "alpaca_en_demo.json"
    if not alpaca.is_file():
        from sft_sweep.config import asset_path

        alpaca = Path(asset_path("sample/alpaca.json"))
    return {"arch": arch, "config": ARCHS[arch], "tokenizer": str(tokenizer) if tokenizer.is_dir() else None,
            "data": str(alpaca), "packed": packed, "steps": steps, "warmup": warmup,
            "batch": 8, "max_length": 1024}


class Timer:
    """A TrainerCallback timing the steps after `warmup`, and the tokens they saw."""

    def __new__(cls, warmup: int):
        from transformers import TrainerCallback

        class _Timer(TrainerCallback):
            def __init__(self):
                self.start = self.tokens0 = None
                self.seconds = self.tokens = 0

            def on_step_end(self, args, state, control, **kwargs):
                import torch

                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                if state.global_step == warmup:
                    self.start, self.tokens0 = time.perf_counter(), state.num_input_tokens_seen
                elif state.global_step > warmup:
                    self.seconds = time.perf_counter() - self.start
                    self.tokens = state.num_input_tokens_seen - self.tokens0

        return _Timer()


def linear_params(model) -> int:
    import torch

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def measure(trainer, s: dict) -> dict:
    import torch

    timer = Timer(s["warmup"])
    trainer.add_callback(timer)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    n_linear = linear_params(trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model")
                             else trainer.model)
    timed_steps = s["steps"] - s["warmup"]
    out = {"tokens_per_s": timer.tokens / timer.seconds, "step_s": timer.seconds / timed_steps,
           "steps": trainer.state.global_step, "n_linear": n_linear,
           "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None}
    out["mfu"] = 4 * n_linear * out["tokens_per_s"] / PEAK_FLOPS if torch.cuda.is_available() else None
    return out


def run_ours(s: dict, tmp: str) -> dict:
    """sft-sweep's own setup (recipe.setup) on the composed config, as `python -m sft_sweep` builds it."""
    from sft_sweep import checks, config
    from sft_sweep.recipe import setup
    from sft_sweep.run_dir import RunDir

    overrides = [f"trainer.max_steps={s['steps']}", f"trainer.packing={str(s['packed']).lower()}",
                 f"trainer.max_length={s['max_length']}", f"trainer.per_device_train_batch_size={s['batch']}",
                 "trainer.eval_strategy=no", "trainer.eval_on_start=false", "trainer.save_strategy=no",
                 "trainer.logging_steps=1000", "eval.enabled=false", "monitor=none", f"data.cache_dir={tmp}/cache",
                 "data.min_val_size=16", "data.val_ratio=0"]
    overrides += ["model.dtype=auto", "model.train_in_full=null", "optim.learning_rate=2e-4"]  # as the plain script
    if s["config"]:
        overrides += [f"model.config.{k}={v}" for k, v in s["config"].items()]
    if s["tokenizer"]:
        overrides.append(f"model.tokenizer={s['tokenizer']}")
    overrides += ["data=local", f"data.path={s['data']}"]
    c = config.plain(config.compose(overrides))
    checks.validate(c)
    trainer, _ = setup(c, RunDir(Path(tmp) / "ours"))
    return measure(trainer, s)


def run_plain(s: dict, tmp: str) -> dict:
    """A plain TRL script: the same model and rows, TRL's defaults."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from sft_sweep import config
    from sft_sweep.config import asset_path
    from sft_sweep.data.sources import read_source

    tokenizer = AutoTokenizer.from_pretrained(s["tokenizer"] or asset_path("tiny_tokenizer"))
    arch = s["config"] or config.plain(config.compose())["model"]["config"]  # the tiny preset's
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**arch),
                                             dtype=torch.bfloat16 if bf16 else torch.float32)
    rows = [r for r, _ in read_source(s["data"])]
    messages = [[{"role": "user", "content": r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else "")},
                 {"role": "assistant", "content": r["output"]}] for r in rows]
    trainer = SFTTrainer(
        model=model, processing_class=tokenizer, train_dataset=Dataset.from_dict({"messages": messages}),
        peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
        args=SFTConfig(output_dir=f"{tmp}/plain", max_steps=s["steps"], per_device_train_batch_size=s["batch"],
                       max_length=s["max_length"], packing=s["packed"], bf16=bf16, learning_rate=2e-4,
                       logging_steps=1000, save_strategy="no", report_to=[],
                       include_num_input_tokens_seen="non_padding"),
    )
    return measure(trainer, s)


def run_loop(s: dict, tmp: str) -> dict:
    """A plain transformers + PEFT loop with the model's own cross-entropy (its full logits), as LLaMA-Factory and
    Axolotl train by default: padded batches, or HF's padding-free flattening when packed."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, DataCollatorWithFlattening

    from sft_sweep import config
    from sft_sweep.config import asset_path
    from sft_sweep.data.sources import read_source

    tokenizer = AutoTokenizer.from_pretrained(s["tokenizer"] or asset_path("tiny_tokenizer"))
    arch = s["config"] or config.plain(config.compose())["model"]["config"]
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**arch), dtype=torch.bfloat16 if bf16 else
                                             torch.float32).to(device)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    rows = [r for r, _ in read_source(s["data"])]
    ids = [tokenizer.apply_chat_template([{"role": "user", "content": r["instruction"] + (
        f"\n\n{r['input']}" if r.get("input") else "")}, {"role": "assistant", "content": r["output"]}],
        tokenize=True, return_dict=True)["input_ids"][:s["max_length"]] for r in rows]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    flatten = DataCollatorWithFlattening()
    seconds = tokens = 0
    for step in range(s["steps"]):
        chunk = [ids[(step * s["batch"] + i) % len(ids)] for i in range(s["batch"])]
        if s["packed"]:
            batch = flatten([{"input_ids": x} for x in chunk])
        else:
            width = max(map(len, chunk))
            batch = {"input_ids": torch.tensor([x + [tokenizer.pad_token_id] * (width - len(x)) for x in chunk]),
                     "attention_mask": torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in chunk])}
            batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        batch = {k: v.to(device) for k, v in batch.items()}
        started = time.perf_counter()
        model(**batch).loss.backward()  # the model's own loss: logits for every position
        optimizer.step()
        optimizer.zero_grad()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if step >= s["warmup"]:
            seconds += time.perf_counter() - started
            tokens += sum(map(len, chunk))
    n_linear = linear_params(model.get_base_model())
    out = {"tokens_per_s": tokens / seconds, "step_s": seconds / (s["steps"] - s["warmup"]), "steps": s["steps"],
           "n_linear": n_linear, "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if bf16 or device == "cuda"
           else None}
    out["mfu"] = 4 * n_linear * out["tokens_per_s"] / PEAK_FLOPS if torch.cuda.is_available() else None
    return out


SIDES = {"ours": ("sft-sweep", run_ours), "plain": ("plain TRL", run_plain), "loop": ("plain HF loop", run_loop)}


def one(side: str, s: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return SIDES[side][1](s, tmp)


def in_fresh_process(side: str, s: dict) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run([sys.executable, "-m", "sft_sweep.benchmarks.gpu_throughput", "--one", side,
                        "--spec", json.dumps(s), "--result", out.name], cwd=REPO, check=True)
        return json.loads(Path(out.name).read_text())


def table(results: list[dict]) -> str:
    def num(value, fmt):
        return "-" if value is None else format(value, fmt)

    lines = ["| model | batches | side | tokens/s | step s | peak GiB | MFU |", "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['arch']} | {'packed' if r['packed'] else 'unpacked'} | {r['side']} | "
                     f"{num(r['tokens_per_s'], ',.0f')} | {num(r['step_s'], '.3f')} | {num(r['peak_gib'], '.1f')} | "
                     f"{num(r['mfu'] and 100 * r['mfu'], '.1f')}{'%' if r['mfu'] else ''} |")
    for arch, packed in sorted({(r["arch"], r["packed"]) for r in results}):
        ours = next(r for r in results if (r["arch"], r["packed"], r["side"]) == (arch, packed, "sft-sweep"))
        plain = next(r for r in results if (r["arch"], r["packed"], r["side"]) == (arch, packed, "plain TRL"))
        loop = next(r for r in results if (r["arch"], r["packed"], r["side"]) == (arch, packed, "plain HF loop"))
        memory = f", memory x{ours['peak_gib'] / plain['peak_gib']:.2f}" if ours["peak_gib"] else ""
        lines.append(f"{arch} {'packed' if packed else 'unpacked'}: sft-sweep / plain TRL tokens/s "
                     f"x{ours['tokens_per_s'] / plain['tokens_per_s']:.2f}{memory}; sft-sweep / plain HF loop "
                     f"x{ours['tokens_per_s'] / loop['tokens_per_s']:.2f}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m sft_sweep.benchmarks.gpu_throughput",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="0.6b,4b")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="the tiny model, 4 steps, in this process")
    parser.add_argument("--out", type=Path, default=Path("gpu_throughput.json"))
    parser.add_argument("--one", choices=list(SIDES), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:  # a child process: one measurement
        Path(args.result).write_text(json.dumps(one(args.one, json.loads(args.spec))))
        return 0
    archs = ["tiny"] if args.smoke else args.archs.split(",")
    steps, warmup = (4, 1) if args.smoke else (args.steps, args.warmup)
    results = []
    for arch in archs:
        for packed in (False, True):
            s = spec(arch, packed, steps, warmup, args.smoke)
            runs = {side: [] for side in SIDES}
            for _ in range(args.repeats):
                for side in SIDES:  # interleaved, so machine noise hits each alike
                    runs[side].append(one(side, s) if args.smoke else in_fresh_process(side, s))
            for side, (name, _) in SIDES.items():
                median = {k: statistics.median(r[k] for r in runs[side]) if runs[side][0][k] is not None else None
                          for k in runs[side][0]}
                results.append({"arch": arch, "packed": packed, "side": name, **median})
    print(table(results))
    args.out.write_text(json.dumps({"peak_flops": PEAK_FLOPS, "results": results}, indent=2) + "\n")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
