"""Chat with a finished run in the terminal: the probe questions first, then your turns.

    python -m sft_sweep.chat run_dir=outputs/runs/<run> [max_new_tokens=256] [probes=false]

Answers stream token by token (greedy). `/reset` clears the conversation, `/exit` (or Ctrl-D) quits.
"""

import sys
from pathlib import Path

import torch
from transformers import TextStreamer

from sft_sweep.errors import UserError
from sft_sweep.export import parse_args
from sft_sweep.load_run import load_run
from sft_sweep.masking import end_of_turn_token

PROBES = ["Give me an 1-sentence introduction of LLM.", "Calculate 1+1-1",
          "What's the difference between thread and process?"]


@torch.no_grad()
def reply(model, tokenizer, messages: list[dict], max_new_tokens: int) -> str:
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
    eot = tokenizer.convert_tokens_to_ids(end_of_turn_token(tokenizer))
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eot,
                         pad_token_id=tokenizer.pad_token_id, streamer=streamer)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def main(argv: list[str]) -> int:
    try:
        args = parse_args(argv, ("run_dir",), {"max_new_tokens": "256", "probes": "true"})
        model, tokenizer = load_run(Path(args["run_dir"]))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    limit = int(args["max_new_tokens"])
    if args["probes"] == "true":
        for question in PROBES:
            print(f"probe> {question}\nmodel> ", end="", flush=True)
            reply(model, tokenizer, [{"role": "user", "content": question}], limit)
    print("chat: /reset clears the conversation, /exit quits", flush=True)
    messages: list[dict] = []
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            break
        if text == "/exit":
            break
        if text == "/reset":
            messages = []
            print("(conversation cleared)", flush=True)
            continue
        if not text:
            continue
        messages.append({"role": "user", "content": text})
        print("model> ", end="", flush=True)
        messages.append({"role": "assistant", "content": reply(model, tokenizer, messages, limit)})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
