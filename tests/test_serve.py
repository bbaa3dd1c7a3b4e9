"""The served export answers like the run's evaluation: `python -m sft_sweep.serve` on transformers (vLLM's is the
opt-in scripts/serve_acceptance.sh), asked over HTTP what the evaluation asked, as any OpenAI client asks."""

import json
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from sft_sweep.serve import main as serve_cli
from tests.helpers import REPO


def post(url: str, body: dict) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
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
    yield found.group(1), lines
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.slow
def test_the_served_export_answers_the_validation_prompts_as_the_evaluation_did(tiny_run, server):
    url, lines = server
    assert lines[0].startswith(f"exporting {tiny_run} first")  # no merged/ yet: exported on the way
    samples = [json.loads(line) for line in (tiny_run / "eval_samples.jsonl").read_text().splitlines()]
    assert len(samples) == 16
    for sample in samples:  # nothing but the conversation (and its tools) and the evaluation's length limit
        request = {"model": tiny_run.name, "messages": sample["messages"], "max_tokens": 64}
        status, body = post(f"{url}/chat/completions", {**request, **({"tools": sample["tools"]} if "tools" in sample
                                                                      else {})})
        assert status == 200, body
        answer = json.loads(body)
        assert answer["choices"][0]["message"]["content"] == sample["prediction"]
        assert answer["choices"][0]["finish_reason"] == ("stop" if sample["ended"] else "length")
        assert answer["usage"]["completion_tokens"] == sample["n_tokens"]
    # streamed: the same answer, piece by piece, then [DONE]
    status, body = post(f"{url}/chat/completions", {"messages": samples[0]["messages"], "max_tokens": 64,
                                                    "stream": True})
    events = [line.removeprefix("data: ") for line in body.decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e)["choices"][0] for e in events[:-1]]
    assert "".join(c["delta"].get("content", "") for c in chunks) == samples[0]["prediction"]
    with urllib.request.urlopen(f"{url}/models") as response:
        assert [m["id"] for m in json.loads(response.read())["data"]] == [tiny_run.name]
    status, body = post(f"{url}/chat/completions", {"messages": []})
    assert status == 400 and json.loads(body)["error"]["message"].startswith("messages:")


def test_bad_arguments_are_one_line(tmp_path, capsys):
    assert serve_cli([f"run_dir={tmp_path}", "engine=tgi"]) == 2
    assert capsys.readouterr().err == "error: engine=tgi: one of auto, vllm, transformers\n"
    assert serve_cli([f"run_dir={tmp_path}"]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path} holds no finished run (no metrics.json)\n"
    # base + adapter is vLLM's: refused before any export is written
    assert serve_cli([f"run_dir={tmp_path}", "engine=transformers", "lora=true"]) == 2
    assert capsys.readouterr().err.startswith("error: lora=true: serving base + adapter is vLLM's")
    assert not (tmp_path / "merged").exists()
