"""What a fine-tuning token costs: sft-sweep against a plain TRL script and a plain HF/PEFT loop, same job.

    python -m sft_sweep.benchmarks.cost_per_token                     # 3 rounds, unpacked and packed, 30 steps each
    python -m sft_sweep.benchmarks.cost_per_token --rounds 1 --steps 10 --also /path/to/another/sft-sweep
    python -m sft_sweep.benchmarks.cost_per_token --profile           # the top ops of our step and the plain loop's

The job (issue 21's): a random-init Qwen3-architecture model of 42M parameters (hidden 256, 4 layers, tied
embeddings) with the real Qwen3 tokenizer (vocabulary 151,669; ../shared/data/tokenizers/qwen3), LLaMA-Factory's
alpaca_en_demo.json (../shared), deduplicated; LoRA r16/alpha 32 on every linear layer, lr 2e-4 cosine, batch 4,
max_length 512, the loss on the answers only, one thread per process. Each tool trains the same tokenized rows
(sft-sweep's own pipeline makes them once; the others read them), unpacked and packed (the same packed rows and
block-diagonal masks), in the same order:

    sft-sweep      python -m sft_sweep with the job's overrides (a fresh process: start-up, its data cache warm)
    plain TRL      TRL's SFTTrainer on the tokenized rows, TRL's own loss
    plain HF loop  transformers + PEFT, torch's AdamW and cosine schedule, the model's own cross-entropy
    (--also DIR)   another sft-sweep checkout run the same way (e.g. an older release: "today's")

Every run is a fresh process, the tools interleaved in each round. Printed per run: CPU seconds (the process's
user + system time, start-up included), real (non-padding) tokens per second of training, peak RSS; then the
medians and their ratios to sft-sweep, and whether the loss curves agree (relative difference).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sft_sweep import metric_names as names

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
TOKENIZER = SHARED / "tokenizers" / "qwen3"
ALPACA = SHARED / "llamafactory" / "alpaca_en_demo.json"
MODEL = {"vocab_size": 151669, "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4,
         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64, "tie_word_embeddings": True,
         "max_position_embeddings": 2048}
SEED, LR, BATCH, MAX_LENGTH, RANK = 42, 2e-4, 4, 512, 16


def job(data: Path, packing: bool, steps: int) -> list[str]:
    """The job as sft-sweep's overrides (on the tiny preset: a model built from a config)."""
    return [f"model.tokenizer={TOKENIZER}", *(f"model.config.{k}={str(v).lower()}" for k, v in MODEL.items()),
            "model.train_in_full=null", "data=local", f"data.path={data}", "data.format=alpaca", "data.val_ratio=0",
            "data.min_val_size=1", "trainer.eval_strategy=no", "trainer.eval_on_start=false",  # 984 rows train
            f"optim.learning_rate={LR}", f"lora.r={RANK}",
            f"trainer.per_device_train_batch_size={BATCH}", f"trainer.max_length={MAX_LENGTH}",
            f"trainer.packing={str(packing).lower()}", f"trainer.max_steps={steps}", "trainer.logging_steps=1",
            "trainer.save_strategy=no", "eval.enabled=false", f"seed={SEED}"]


# --- the plain tools, each in its own process: python -m sft_sweep.benchmarks.cost_per_token plain-... ----------
def plain_model(tokenizer_dir: str):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = AutoConfig.for_model("qwen3", **MODEL, pad_token_id=tokenizer.pad_token_id, use_cache=False)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa")
    lora = LoraConfig(r=RANK, lora_alpha=2 * RANK, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, lora), tokenizer


def plain_trl(rows_dir: str, packed: bool, steps: int, out: str) -> dict:
    """TRL's SFTTrainer, its own loss, on the tokenized rows (the rows' assistant masks are applied by TRL)."""
    from datasets import load_from_disk
    from trl import SFTConfig, SFTTrainer

    from sft_sweep.packing import BlockDiagonalCollator

    model, tokenizer = plain_model(str(TOKENIZER))
    args = SFTConfig(output_dir=out, learning_rate=LR, weight_decay=0.01, lr_scheduler_type="cosine", warmup_steps=0.03,
                     max_steps=steps, per_device_train_batch_size=BATCH, max_length=MAX_LENGTH, logging_steps=1,
                     save_strategy="no", eval_strategy="no", seed=SEED, data_seed=SEED, report_to=[],
                     dataloader_pin_memory=False, bf16=False,
                     include_num_input_tokens_seen="all" if packed else "non_padding")
    trainer = SFTTrainer(model=model, args=args, train_dataset=load_from_disk(rows_dir), processing_class=tokenizer,
                         data_collator=BlockDiagonalCollator(tokenizer.pad_token_id) if packed else None)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"tokens": trainer.state.num_input_tokens_seen, "train_seconds": seconds, "losses": losses}


def plain_loop(rows_dir: str, packed: bool, steps: int) -> dict:
    """transformers + PEFT and a hand-written loop: the model's own cross-entropy (its full logits), AdamW, cosine."""
    import torch
    from datasets import load_from_disk
    from transformers import get_cosine_schedule_with_warmup

    from sft_sweep.packing import BlockDiagonalCollator

    model, tokenizer = plain_model(str(TOKENIZER))
    rows = load_from_disk(rows_dir)
    collate = BlockDiagonalCollator(tokenizer.pad_token_id)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR, weight_decay=0.01)
    schedule = get_cosine_schedule_with_warmup(optimizer, round(0.03 * steps + 0.5 - 1e-9), steps)
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(SEED)).tolist()
    model.train()
    tokens, losses, started = 0, [], time.perf_counter()
    for step in range(steps):
        batch = collate([rows[i] for i in order[step * BATCH:(step + 1) * BATCH]])
        mask = batch["attention_mask"]
        tokens += int(mask.sum()) if mask.dim() == 2 else int((batch["input_ids"] != -1).sum())
        loss = model(**batch).loss  # the model's own: full logits, mean over the batch's trained tokens
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return {"tokens": tokens, "train_seconds": time.perf_counter() - started, "losses": losses}


# --- the harness ---------------------------------------------------------------------------------------------
def run_tool(command: list[str], cwd: Path, env: dict) -> tuple[float, float, str, str]:
    """(CPU seconds, peak RSS MiB, stdout, stderr) of one fresh process (its rusage, reaped by os.wait4)."""
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # read the output on threads, reap with wait4 for the process's own resource usage
    chunks = {"out": [], "err": []}
    readers = [threading.Thread(target=lambda s=stream, k=key: chunks[k].append(s.read()))
               for stream, key in ((proc.stdout, "out"), (proc.stderr, "err"))]
    for reader in readers:
        reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    for reader in readers:
        reader.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed ({proc.returncode}):\n{''.join(chunks['err'])[-3000:]}")
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, "".join(chunks["out"]), "".join(chunks["err"])


def sft_sweep_run(checkout: Path, data: Path, packed: bool, steps: int, run_dir: Path, cache: Path, env: dict) -> dict:
    cpu, rss, _, _ = run_tool([sys.executable, "-m", "sft_sweep", f"hydra.run.dir={run_dir}",
                               f"data.cache_dir={cache}", *job(data, packed, steps)], checkout, env)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    losses = [h["loss"] for h in json.loads((run_dir / "log_history.json").read_text()) if "loss" in h]
    return {"cpu_s": cpu, "rss_mib": rss, "tokens": metrics[names.TRAIN_TOKENS],
            "train_seconds": metrics[names.TRAIN_RUNTIME], "losses": losses}


def plain_run(kind: str, rows: Path, packed: bool, steps: int, out: Path, env: dict) -> dict:
    result = out / "result.json"
    cpu, rss, _, _ = run_tool([sys.executable, "-m", "sft_sweep.benchmarks.cost_per_token", kind, str(rows),
                               str(int(packed)), str(steps), str(result)], REPO, env)
    return {"cpu_s": cpu, "rss_mib": rss, **json.loads(result.read_text())}


def prepare(tmp: Path, steps: int) -> tuple[Path, Path, dict[bool, Path]]:
    """The deduplicated Alpaca file as sft-sweep reads it, its data cache warmed, and the tokenized (unpacked,
    packed) training rows the plain tools read -- sft-sweep's own, from that cache."""
    from sft_sweep import config
    from sft_sweep.data import build_datasets
    from sft_sweep.model import build_tokenizer
    from sft_sweep.packing import pack

    data, cache = tmp / "alpaca_en_demo.json", tmp / "cache"
    data.write_bytes(ALPACA.read_bytes())
    rows = {}
    for packed in (False, True):
        c = config.plain(config.compose([*job(data, packed, steps), f"data.cache_dir={cache}"]))
        built = build_datasets(c["data"], build_tokenizer(c["model"]), MAX_LENGTH, packed)
        train = pack(built.train, MAX_LENGTH) if packed else built.train
        rows[packed] = tmp / f"rows_{'packed' if packed else 'unpacked'}"
        train.save_to_disk(str(rows[packed]))
    return data, cache, rows


def agreement(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) / abs(y) for x, y in zip(a, b)) if a and b else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--also", type=Path, action="append", default=[],
                        help="another sft-sweep checkout to run the same way (e.g. an older release)")
    parser.add_argument("--only", choices=["unpacked", "packed"], default=None)
    parser.add_argument("--profile", action="store_true", help="profile our step and the plain loop's, then stop")
    parser.add_argument("--out", type=Path, default=None, help="write every measurement as JSON here")
    args = parser.parse_args()
    if not TOKENIZER.is_dir() or not ALPACA.is_file():
        sys.exit(f"error: this benchmark needs ../shared ({TOKENIZER} and {ALPACA})")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONHASHSEED": "0"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data, cache, rows = prepare(tmp, args.steps)
        if args.profile:
            return profile(data, cache, rows, min(args.steps, 10))
        tools = {"sft-sweep": None, "plain TRL": "plain-trl", "plain HF loop": "plain-loop",
                 **{f"--also {p.name}": p.resolve() for p in args.also}}
        results = {}
        for packed in [p for p in (False, True) if args.only in (None, "packed" if p else "unpacked")]:
            mode = "packed" if packed else "unpacked"
            for r in range(args.rounds):
                for name, how in tools.items():
                    out = tmp / f"{mode}_{r}_{name.replace(' ', '_').replace('/', '_')}"
                    out.mkdir()
                    if how is None or isinstance(how, Path):  # (each checkout its own data cache: its own layout)
                        result = sft_sweep_run(how or REPO, data, packed, args.steps, out / "run",
                                               cache if how is None else tmp / f"cache_{how.name}", env)
                    else:
                        result = plain_run(how, rows[packed], packed, args.steps, out, env)
                    results.setdefault(mode, {}).setdefault(name, []).append(result)
                    print(f"{mode} round {r} {name:>16}: {result['cpu_s']:6.1f} CPU s  "
                          f"{result['tokens'] / result['train_seconds']:7,.0f} tokens/s  "
                          f"{result['rss_mib']:6,.0f} MiB peak RSS  ({result['tokens']} tokens, "
                          f"{result['train_seconds']:.1f} s training)", flush=True)
        report(results)
        if args.out:
            args.out.write_text(json.dumps(results, indent=2))


def report(results: dict) -> None:
    for mode, by_tool in results.items():
        ours = by_tool["sft-sweep"]
        base = {"cpu": statistics.median(r["cpu_s"] for r in ours),
                "tps": statistics.median(r["tokens"] / r["train_seconds"] for r in ours),
                "rss": statistics.median(r["rss_mib"] for r in ours)}
        print(f"\n{mode}: medians, and x sft-sweep")
        print("| tool | CPU s per run | x | tokens/s | x | peak RSS MiB | loss vs sft-sweep (max rel. diff) |")
        print("|---|---|---|---|---|---|---|")
        for name, runs in by_tool.items():
            cpu = statistics.median(r["cpu_s"] for r in runs)
            tps = statistics.median(r["tokens"] / r["train_seconds"] for r in runs)
            rss = statistics.median(r["rss_mib"] for r in runs)
            print(f"| {name} | {cpu:.1f} | {cpu / base['cpu']:.2f} | {tps:,.0f} | {tps / base['tps']:.2f} | "
                  f"{rss:,.0f} | {agreement(runs[0]['losses'], ours[0]['losses']):.1e} |")


def profile(data: Path, cache: Path, rows: dict, steps: int) -> None:
    """torch.profiler over `steps` training steps (unpacked), in this process: sft-sweep's trainer, then TRL's
    own loss (the trainer's parent class), then the plain loop's model-own cross-entropy."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from sft_sweep import config
    from sft_sweep.recipe import setup
    from sft_sweep.run_dir import RunDir
    from sft_sweep.trainer import Trainer

    torch.set_num_threads(1)
    for label, loss in (("sft-sweep (trained positions only)", None), ("TRL's own loss", "trl")):
        c = config.plain(config.compose([*job(data, False, steps), f"data.cache_dir={cache}"]))
        with tempfile.TemporaryDirectory() as out:
            trainer, _ = setup(c, RunDir(out))
            if loss == "trl":  # the parent's compute_loss, as TRL runs it
                trainer.compute_loss = super(Trainer, trainer).compute_loss
            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                started = time.perf_counter()
                trainer.train()
            seconds = time.perf_counter() - started
        print(f"\n{label}: {steps} steps in {seconds:.1f} s, {trainer.state.num_input_tokens_seen} tokens")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("plain-trl", "plain-loop"):
        kind, rows_dir, packed, steps, result = sys.argv[1:6]
        import torch

        torch.set_num_threads(1)
        with tempfile.TemporaryDirectory() as out:
            measured_run = (plain_trl(rows_dir, bool(int(packed)), int(steps), out) if kind == "plain-trl"
                            else plain_loop(rows_dir, bool(int(packed)), int(steps)))
        Path(result).write_text(json.dumps(measured_run))
    else:
        main()
