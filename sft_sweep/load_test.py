"""A load test of the served model (`python -m sft_sweep.serve run_dir=<run> bench=true`): the server this
command would start, driven by GuideLLM at several concurrencies with the run's own validation prompts, each
answered greedily up to the evaluation's max_new_tokens; throughput, time to first token, inter-token latency and
request latency per concurrency go into <run>/load_test.json, the export's model card and the run report.

Why GuideLLM (the vLLM project's load generator, `pip install 'sft-sweep[loadtest]'`): it drives any
OpenAI-compatible server, so transformers' server and vLLM's are measured by one tool, the same way, and their
figures compare; `vllm bench serve` would need vLLM itself (3.5 GB on CPU) even to measure transformers' server,
and evalscope's perf pins datasets 4 (sft-sweep runs datasets 5). No load logic of our own: we give GuideLLM the
prompts and the server, and read its report (kept whole beside ours, load_test_guidellm.json).
"""

import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from importlib.metadata import version
from pathlib import Path

from sft_sweep.environment import hardware
from sft_sweep.errors import UserError
from sft_sweep.run_dir import RunDir, read_jsonl, write_text

CARD_HEADING = "## Serving load test"
# (our name, GuideLLM's metric, its statistic) for each figure of a row
FIGURES = [("requests_per_s", "requests_per_second", "mean"),
           ("output_tokens_per_s", "output_tokens_per_second", "mean"),
           ("ttft_ms_p50", "time_to_first_token_ms", "p50"), ("ttft_ms_p90", "time_to_first_token_ms", "p90"),
           ("ttft_ms_p99", "time_to_first_token_ms", "p99"), ("itl_ms_p50", "inter_token_latency_ms", "p50"),
           ("latency_s_p50", "request_latency", "p50"), ("latency_s_p90", "request_latency", "p90"),
           ("latency_s_p99", "request_latency", "p99")]
COLUMNS = ["concurrency", "requests", "errors", *(name for name, _, _ in FIGURES)]


def guidellm_cli() -> str | None:
    """GuideLLM's command: beside this Python (its environment's, activated or not), else on PATH."""
    beside = Path(sys.executable).with_name("guidellm")
    return str(beside) if beside.is_file() else shutil.which("guidellm")


def check(run_dir: RunDir, concurrency: str, requests: str) -> tuple[list[int], int | None]:
    """Before the server starts: GuideLLM installed, the run's validation prompts there, the arguments sound."""
    if guidellm_cli() is None:
        raise UserError("bench=true needs GuideLLM, the load generator: pip install 'sft-sweep[loadtest]'")
    if not run_dir.eval_samples.is_file():
        raise UserError(f"bench=true: {run_dir.eval_samples} not found; the load test asks the run's validation "
                        f"prompts, which its evaluation writes (eval.enabled=true)")
    if not prompts(run_dir):
        raise UserError(f"bench=true: every validation prompt in {run_dir.eval_samples} offers tools, which the load "
                        f"test leaves out")
    levels = [part.strip() for part in concurrency.split(",")]
    if not all(p.isdigit() and int(p) > 0 for p in levels):
        raise UserError(f"concurrency={concurrency}: positive numbers, comma-separated (e.g. concurrency=1,4,16)")
    if requests and not (requests.isdigit() and int(requests) > 0):
        raise UserError(f"requests={requests}: a positive number (default: each validation prompt once per level)")
    return [int(p) for p in levels], int(requests) if requests else None


def prompts(run_dir: RunDir) -> list[dict]:
    """The conversations the run's evaluation answered (system prompt included), one request each. Those that
    offered tools are left out: GuideLLM makes a row with tools a tool-calling conversation of several turns, which
    is another workload (and no longer the prompt the evaluation answered)."""
    return [{"messages": row["messages"]} for row in read_jsonl(run_dir.eval_samples) if not row.get("tools")]


def answers(url: str) -> bool:
    """Whether an OpenAI server answers at `url` now."""
    try:
        with urllib.request.urlopen(f"{url}/v1/models", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_until_up(url: str, server: subprocess.Popen, log: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] if log.is_file() else []
            raise UserError(f"the server exited with code {server.returncode} before answering"
                            + (f": {tail[0]}" if tail else "") + f" (its log: {log})")
        if answers(url):
            return
        time.sleep(1)
    raise UserError(f"the server did not answer {url}/v1/models within {timeout:.0f} s (its log: {log})")


def guidellm_command(url: str, data: Path, levels: list[int], requests: int, max_tokens: int, out: Path) -> list[str]:
    """GuideLLM's `run`: chat completions, streamed (so it times the first token), at each concurrency in turn,
    `requests` requests each, answers capped at max_tokens (but ended by the model's own stop token, as the
    evaluation's were); its whole report as JSON."""
    return [guidellm_cli(), "run", "--backend", f"kind=openai_http,target={url},max_tokens={max_tokens}",
            "--profile", f"kind=concurrent,streams={levels[0]}",
            *(["--override", "profile.streams", ",".join(map(str, levels))] if len(levels) > 1 else []),
            "--constraint", f"kind=max_requests,count={requests}", "--data", f"kind=json_file,path={data}",
            "--output", f"kind=json,path={out}", "--disable-console"]


def rows(report: dict) -> list[dict]:
    """One row per concurrency of GuideLLM's report: its own statistics over the successful requests."""
    out = []
    for benchmark in report["benchmarks"]:
        metrics = benchmark["metrics"]
        totals = metrics["request_totals"]
        row = {"concurrency": benchmark["config"]["strategy"]["streams"], "requests": totals["successful"],
               "errors": totals["errored"] + totals["incomplete"]}
        for name, metric, statistic in FIGURES:
            stats = metrics[metric]["successful"]
            row[name] = stats[statistic] if statistic == "mean" else stats["percentiles"][statistic]
        out.append(row)
    return out


def card_section(results: dict) -> str:
    """The model card's section: what was measured, how, and the table."""
    head = ["concurrency", "requests", "errors", "requests/s", "output tokens/s", "TTFT p50 / p90 / p99 (ms)",
            "inter-token p50 (ms)", "latency p50 / p90 / p99 (s)"]
    lines = [CARD_HEADING, "",
             f"{results['engine']} on {results['hardware']}, driven by GuideLLM {results['guidellm']} "
             f"(`python -m sft_sweep.serve run_dir=... bench=true`, {results['measured_at']}): the run's "
             f"{results['prompts']} validation prompts (those with tools left out), chat completions streamed, "
             f"greedy, at most {results['max_tokens']} new tokens each.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results["rows"]:
        lines.append(f"| {r['concurrency']} | {r['requests']} | {r['errors']} | {r['requests_per_s']:.2f} | "
                     f"{r['output_tokens_per_s']:.1f} | {r['ttft_ms_p50']:.1f} / {r['ttft_ms_p90']:.1f} / "
                     f"{r['ttft_ms_p99']:.1f} | {r['itl_ms_p50']:.1f} | {r['latency_s_p50']:.3f} / "
                     f"{r['latency_s_p90']:.3f} / {r['latency_s_p99']:.3f} |")
    return "\n".join(lines) + "\n"


def with_section(card: str, section: str) -> str:
    """The card with its load-test section replaced (a test run again) or added before "## How it was made"."""
    if CARD_HEADING in card:
        start = card.index(CARD_HEADING)
        end = card.find("\n## ", start + len(CARD_HEADING))
        return card[:start] + section + ("\n" + card[end + 1:] if end >= 0 else "")
    anchor = card.find("## How it was made")
    return card + "\n" + section if anchor < 0 else card[:anchor] + section + "\n" + card[anchor:]


def measure(run_dir: RunDir, server_argv: list[str], url: str, engine: str, levels: list[int],
            requests: int | None) -> dict:
    """Start the server, drive it with GuideLLM at each concurrency, stop it; write the records."""
    if answers(url):  # another server there would be measured instead of ours, which could not listen
        raise UserError(f"a server already answers at {url}: stop it, or pick another port (port=0: a free one)")
    conversations = prompts(run_dir)
    max_tokens = int(run_dir.saved_config()["eval"]["max_new_tokens"])  # as the evaluation answered
    requests = requests or len(conversations)
    log = run_dir.load_test_server_log
    with tempfile.TemporaryDirectory() as tmp, open(log, "w", encoding="utf-8") as server_log:
        data, raw = Path(tmp) / "prompts.jsonl", Path(tmp) / "guidellm.json"
        data.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in conversations), encoding="utf-8")
        server = subprocess.Popen(server_argv, stdout=server_log, stderr=subprocess.STDOUT)
        try:
            wait_until_up(url, server, log)
            print(f"load test: GuideLLM at concurrency {', '.join(map(str, levels))}, {requests} requests each",
                  flush=True)
            proc = subprocess.run(guidellm_command(url, data, levels, requests, max_tokens, raw),
                                  capture_output=True, text=True)
            if proc.returncode != 0 or not raw.is_file():
                last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                raise UserError(f"GuideLLM failed (exit {proc.returncode}): {last[0]}")
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        report = json.loads(raw.read_text(encoding="utf-8"))
    machine = hardware()
    results = {"engine": engine, "server": server_argv, "guidellm": version("guidellm"),
               "hardware": ", ".join(machine["gpus"]) or f"CPU ({machine['cpu_count']} cores)",
               "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "prompts": len(conversations),
               "left_out_with_tools": len(read_jsonl(run_dir.eval_samples)) - len(conversations),
               "max_tokens": max_tokens, "rows": rows(report)}
    write_text(run_dir.load_test_raw, json.dumps(report))
    write_text(run_dir.load_test, json.dumps(results, indent=2))
    card = run_dir.merged / "README.md"
    write_text(card, with_section(card.read_text(encoding="utf-8"), card_section(results)))
    return results


def summary(results: dict) -> str:
    """The console's lines: a row per concurrency."""
    lines = ["concurrency  requests  errors  req/s   out tok/s  TTFT p50 ms  p99 ms  latency p50 s  p99 s"]
    for r in results["rows"]:
        lines.append(f"{r['concurrency']:>11}  {r['requests']:>8}  {r['errors']:>6}  {r['requests_per_s']:>5.2f}  "
                     f"{r['output_tokens_per_s']:>9.1f}  {r['ttft_ms_p50']:>11.1f}  {r['ttft_ms_p99']:>6.1f}  "
                     f"{r['latency_s_p50']:>13.3f}  {r['latency_s_p99']:>5.3f}")
    return "\n".join(lines)
