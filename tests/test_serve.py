"""The served export answers like the run's evaluation: `python -m sft_sweep.serve` on transformers (vLLM's is the
opt-in scripts/serve_acceptance.sh), asked over HTTP what the evaluation asked, as any OpenAI client asks."""

import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from sft_sweep import load_test
from sft_sweep.errors import UserError
from sft_sweep.run_dir import RunDir
from sft_sweep.serve import main as serve_cli
from tests.helpers import REPO, embedded


def post(url: str, body: dict) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def server(tiny_run):
    shutil.rmtree(tiny_run / "merged", ignore_errors=True)  # serve exports first
    proc = subprocess.Popen([sys.executable, "-m", "sft_sweep.serve", f"run_dir={tiny_run}", "engine=transformers",
                             "port=0"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if found := re.search(r"on (http://127\.0\.0\.1:\d+/v1)", line):
            break
    else:
        raise AssertionError("".join(lines))
    url = found.group(1)
    threading.Thread(target=lambda: [lines.append(line) for line in proc.stdout], daemon=True).start()
    deadline = time.time() + 300
    while True:  # the server loads the model, then listens
        try:
            if get(f"{url}/models")[0] == 200:
                break
        except OSError:
            pass
        assert proc.poll() is None and time.time() < deadline, "".join(lines)
        time.sleep(0.5)
    yield url, lines
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.slow
def test_the_served_export_answers_the_validation_prompts_as_the_evaluation_did(tiny_run, server):
    """transformers serve on the export, four requests at a time: each answer is the evaluation's, token for
    token."""
    url, lines = server
    assert lines[0].startswith(f"exporting {tiny_run} first")  # no merged/ yet: exported on the way
    assert "transformers.cli.transformers serve" in "".join(lines[:3])
    samples = [json.loads(line) for line in (tiny_run / "eval_samples.jsonl").read_text().splitlines()]
    assert len(samples) == 16

    def ask(sample):  # nothing but the conversation (and its tools) and the evaluation's length limit
        request = {"messages": sample["messages"], "max_tokens": 64, **({"tools": sample["tools"]} if "tools" in
                                                                        sample else {})}
        return post(f"{url}/chat/completions", request)

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(ask, samples))
    for sample, (status, body) in zip(samples, answers):
        assert status == 200, body
        answer = json.loads(body)
        assert answer["usage"]["completion_tokens"] == sample["n_tokens"] + sample["ended"]  # (+ its end of turn)
        message = answer["choices"][0]["message"]  # (the tiny run writes no tool call: the server would parse it)
        assert message["content"] == sample["prediction"] and not message.get("tool_calls")
        assert answer["choices"][0]["finish_reason"] == ("stop" if sample["ended"] else "length")
    # streamed: the same answer, piece by piece, the last chunk with the finish reason (transformers serve sends
    # no `[DONE]` after it; OpenAI's client stops on either)
    status, body = post(f"{url}/chat/completions", {"messages": samples[0]["messages"], "max_tokens": 64,
                                                    "stream": True})
    events = [line.removeprefix("data: ") for line in body.decode().splitlines() if line.startswith("data: ")]
    chunks = [json.loads(e)["choices"][0] for e in events if e != "[DONE]" and json.loads(e)["choices"]]
    # (streaming, transformers 5.25 repeats the prompt's closing "\n\n" after Qwen3's empty <think></think>, once as
    # reasoning and once before the content: the answer's tokens are the same)
    assert "".join(c["delta"].get("content") or "" for c in chunks).removeprefix("\n\n") == samples[0]["prediction"]
    assert chunks[-1]["finish_reason"] == "stop"
    status, body = get(f"{url}/models")
    assert [m["id"] for m in json.loads(body)["data"]] == [str(tiny_run / "merged")]
    status, body = post(f"{url}/chat/completions", {"messages": []})
    assert status == 400 and "empty conversation" in json.loads(body)["detail"]


NO_GUIDELLM = pytest.mark.skipif(shutil.which("guidellm") is None,
                                 reason="GuideLLM is not installed (pip install 'sft-sweep[loadtest]')")


@pytest.mark.slow
@NO_GUIDELLM
def test_a_load_test_drives_the_server_with_guidellm_and_writes_its_figures(tiny_run):
    """`serve bench=true`: transformers' server on the export, GuideLLM at concurrency 1 and 4 with the run's
    validation prompts; its figures in load_test.json, the model card and the report; and under load, every answer
    still the evaluation's."""
    proc = subprocess.run([sys.executable, "-m", "sft_sweep.serve", f"run_dir={tiny_run}", "engine=transformers",
                           "port=0", "bench=true", "concurrency=1,4"], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    samples = [json.loads(line) for line in (tiny_run / "eval_samples.jsonl").read_text().splitlines()]
    asked = [s for s in samples if not s.get("tools")]  # rows with tools are another workload: left out
    results = json.loads((tiny_run / "load_test.json").read_text())
    assert results["engine"] == "transformers serve" and results["prompts"] == len(asked) > 0
    assert results["left_out_with_tools"] == len(samples) - len(asked)
    assert [r["concurrency"] for r in results["rows"]] == [1, 4]
    for r in results["rows"]:
        assert r["requests"] == len(asked) and r["errors"] == 0
        assert r["requests_per_s"] > 0 and r["output_tokens_per_s"] > 0
        assert 0 < r["ttft_ms_p50"] <= r["ttft_ms_p90"] <= r["ttft_ms_p99"]
        assert 0 < r["latency_s_p50"] <= r["latency_s_p90"] <= r["latency_s_p99"]
        assert r["ttft_ms_p50"] / 1000 <= r["latency_s_p99"]  # the first token comes before the answer ends
    # GuideLLM's own report: each request asked an evaluation prompt and got the evaluation's answer, under load too
    # (streamed: transformers 5.25 repeats the "\n\n" that closes Qwen3's empty <think></think> before the content)
    report = json.loads((tiny_run / "load_test_guidellm.json").read_text())
    expected = {json.dumps(s["messages"]): s["prediction"] for s in asked}
    for benchmark in report["benchmarks"]:
        answered = {json.dumps(json.loads(r["request_args"])["body"]["messages"]): r["output"].removeprefix("\n\n")
                    for r in benchmark["requests"]["successful"]}
        assert answered == expected
    card = (tiny_run / "merged" / "README.md").read_text()
    assert card.count("## Serving load test") == 1
    assert card.index("## Serving load test") < card.index("## How it was made")
    for r in results["rows"]:
        assert f"| {r['concurrency']} | {r['requests']} | 0 | {r['requests_per_s']:.2f} | " in card
    assert embedded(tiny_run / "report.html")["load_test"] == results
    assert "concurrency  requests  errors" in proc.stdout


def test_a_load_test_run_again_replaces_its_section_of_the_model_card():
    card = "# run\n\n## Evaluation\n\nx\n\n## How it was made\n\ny\n"
    once = load_test.with_section(card, "## Serving load test\n\nfirst\n")
    twice = load_test.with_section(once, "## Serving load test\n\nsecond\n")
    assert twice == card.replace("## How it was made", "## Serving load test\n\nsecond\n\n## How it was made")


def test_a_load_test_refuses_a_port_another_server_answers_on(tmp_path):
    """Another server there would be measured instead of ours (which could not listen): refused, nothing started."""
    class Models(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"data": []}')

        def log_message(self, *args):
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Models) as other:
        threading.Thread(target=other.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{other.server_address[1]}"
        with pytest.raises(UserError, match=rf"^a server already answers at {url}: stop it, or pick another port"):
            load_test.measure(RunDir(tmp_path), [sys.executable, "-c", "raise SystemExit(9)"], url, "vLLM", [1], None)
        other.shutdown()
    assert not list(tmp_path.iterdir())  # no record, no server log


@NO_GUIDELLM
def test_bad_load_test_arguments_are_one_line_before_any_server_starts(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(UserError, match=r"eval_samples.jsonl not found; the load test asks the run's validation"):
        load_test.check(run, "1,4", "")
    run.eval_samples.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(UserError, match=r"^concurrency=1,0: positive numbers, comma-separated"):
        load_test.check(run, "1,0", "")
    with pytest.raises(UserError, match=r"^requests=-3: a positive number"):
        load_test.check(run, "1", "-3")
    assert load_test.check(run, "1, 8", "") == ([1, 8], None)


def test_bad_arguments_are_one_line(tmp_path, capsys):
    assert serve_cli([f"run_dir={tmp_path}", "engine=tgi"]) == 2
    assert capsys.readouterr().err == "error: engine=tgi: one of auto, vllm, transformers\n"
    assert serve_cli([f"run_dir={tmp_path}", "gpu_memory_utilization=1.5"]) == 2
    assert capsys.readouterr().err == ("error: gpu_memory_utilization=1.5: a fraction in (0, 1], vLLM's "
                                       "--gpu-memory-utilization\n")
    assert serve_cli([f"run_dir={tmp_path}"]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path} holds no finished run (no metrics.json)\n"
    # base + adapter is vLLM's: refused before any export is written
    assert serve_cli([f"run_dir={tmp_path}", "engine=transformers", "lora=true"]) == 2
    assert capsys.readouterr().err.startswith("error: lora=true: serving base + adapter is vLLM's")
    assert not (tmp_path / "merged").exists()
