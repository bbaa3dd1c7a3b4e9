"""Chat with a finished run in the terminal: the run's probe questions first, then your turns.

    python -m sft_sweep.chat run_dir=outputs/runs/<run> [max_new_tokens=256] [probes=false]

Answers stream token by token (greedy). `/reset` clears the conversation, `/exit` (or Ctrl-D)
quits; Ctrl-C stops an answer, and at the prompt quits.
"""

import sys

from transformers import TextStreamer

from sft_sweep import trained
from sft_sweep.config import parse_cli_args
from sft_sweep.console import cli_logging
from sft_sweep.errors import one_line_errors
from sft_sweep.evaluation import probe_question
from sft_sweep.generation import generate
from sft_sweep.run_dir import RunDir


def reply(model, tokenizer, messages: list[dict], max_new_tokens: int, template_kwargs: dict) -> str:
    """Stream the answer to `messages`, asked as the run's evaluation asks (generation.generate: greedy, its
    end-of-turn token, `template_kwargs` -- the run's eval.enable_thinking among them)."""
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    [answer] = generate(model, tokenizer, [messages], max_new_tokens, batch_size=1, template_kwargs=template_kwargs,
                        streamer=streamer)
    return answer["prediction"].strip()


def run_probes(run_dir: RunDir) -> list:
    """The probes the run was evaluated with (its saved config's eval.probes)."""
    return (run_dir.saved_config().get("eval") or {}).get("probes") or []


@one_line_errors
def main(argv: list[str]) -> int:
    args = parse_cli_args(argv, __doc__, ("run_dir",), {"max_new_tokens": "256", "probes": "true"})
    cli_logging()
    run_dir = RunDir(args["run_dir"])
    model, tokenizer = trained.load(run_dir)
    limit = int(args["max_new_tokens"])
    template_kwargs = trained.template_kwargs(run_dir, tokenizer.chat_template or "")
    try:
        if args["probes"] == "true":
            for probe in run_probes(run_dir):
                conversation = [{"role": "user", "content": probe}] if isinstance(probe, str) else probe
                print(f"probe> {probe_question(probe)}\nmodel> ", end="", flush=True)
                reply(model, tokenizer, conversation, limit, template_kwargs)
        print("chat: /reset clears the conversation, /exit quits", flush=True)
        chat(model, tokenizer, limit, template_kwargs)
    except KeyboardInterrupt:
        print(flush=True)
    return 0


def chat(model, tokenizer, limit: int, template_kwargs: dict) -> None:
    messages: list[dict] = []
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            return
        if text == "/exit":
            return
        if text == "/reset":
            messages = []
            print("(conversation cleared)", flush=True)
            continue
        if not text:
            continue
        print("model> ", end="", flush=True)
        try:
            answer = reply(model, tokenizer, [*messages, {"role": "user", "content": text}], limit, template_kwargs)
        except KeyboardInterrupt:  # stop this answer; the question is dropped from the conversation
            print("\n(answer stopped)", flush=True)
            continue
        messages += [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
