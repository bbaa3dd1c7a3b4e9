"""Ask an OpenAI-compatible server what a run's evaluation asked, and compare its answers with the run's own.

    python scripts/ask_served.py <run dir> [http://127.0.0.1:8000/v1]

Every conversation of <run>/eval_samples.jsonl (with its tools), nothing else but the evaluation's length limit
(eval.max_new_tokens): the server's defaults (the export's chat template and generation config) decide the prompt
and the decoding. Prints how many answers are the same, each differing one, the time taken; exit 1 if any differs.
Used by scripts/serve_acceptance.sh (vLLM); tests/test_serve.py does the same against the transformers server.
"""

import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml


def ask(url: str, body: dict) -> str:
    """The answer's text, or the server's refusal (its error message) in brackets."""
    request = urllib.request.Request(f"{url}/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.loads(response.read())["choices"][0]["message"]["content"]
    except urllib.error.HTTPError as error:
        return f"[HTTP {error.code}: {error.read().decode(errors='replace')[:300]}]"


def openai_messages(messages: list[dict]) -> list[dict]:
    """The conversation in OpenAI's wire format: each tool call with an id and its arguments as a JSON string (the
    dataset holds them as objects, as chat templates want them; an OpenAI server parses them back), each tool answer
    naming the call it answers (the dataset's rows have neither id; chat templates ignore both)."""
    out, calls = [], []
    for message in messages:
        message = dict(message)
        if message.get("tool_calls"):
            message["tool_calls"] = [
                {"id": f"call_{len(calls) + i}", **call, "function": {
                    **call["function"], "arguments": call["function"]["arguments"]
                    if isinstance(call["function"]["arguments"], str) else json.dumps(call["function"]["arguments"])}}
                for i, call in enumerate(message["tool_calls"])]
            calls += [call["id"] for call in message["tool_calls"]]
        if message["role"] == "tool" and "tool_call_id" not in message:
            message["tool_call_id"] = calls.pop(0) if calls else "call_0"
        out.append(message)
    return out


def main(argv: list[str]) -> int:
    run = Path(argv[0])
    url = argv[1] if len(argv) > 1 else "http://127.0.0.1:8000/v1"
    limit = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())["eval"]["max_new_tokens"]
    with urllib.request.urlopen(f"{url}/models") as response:
        served = [m["id"] for m in json.loads(response.read())["data"]]
    model = next((m for m in served if m.endswith("-lora")), served[0])  # the adapter, when served beside its base
    samples = [json.loads(line) for line in (run / "eval_samples.jsonl").read_text().splitlines()]
    same, start = 0, time.monotonic()
    for sample in samples:
        body = {"model": model, "messages": openai_messages(sample["messages"]), "max_tokens": limit}
        if sample.get("tools"):
            body["tools"] = sample["tools"]
        answer = ask(url, body)
        if answer == sample["prediction"]:
            same += 1
        else:
            print(f"differs: {sample['id']} ({sample['kind']}): served {answer!r}, evaluated {sample['prediction']!r}")
    print(f"{same}/{len(samples)} answers the same as the run's evaluation ({model} at {url}, "
          f"{time.monotonic() - start:.1f} s)")
    return 0 if same == len(samples) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
