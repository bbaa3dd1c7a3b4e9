"""Token ids plus an assistant mask for one conversation, from any chat template.

The mask is found by rendering, not by per-model rules, so templates without
`{% generation %}` markers work:

1. Render the whole conversation once; that text is what gets tokenized.
2. Each assistant turn starts where the template's *generation prompt* for the messages
   before it ends: render `messages[:i]` with `add_generation_prompt=True` (with thinking on
   and off, keeping the longest render that is a prefix of the full text, so a pre-filled
   empty `<think></think>` block counts as prompt and is never trained).
3. It ends just after the template's end-of-turn token (found by rendering a probe
   conversation and reading which special token follows the assistant's text).
4. Tokenize the full text with character offsets; a token is trained when it starts inside
   an assistant span.
"""

from dataclasses import dataclass

from sft_sweep.errors import UserError

_PROBE = "\x00sft-sweep-probe\x00"


@dataclass
class Encoded:
    input_ids: list[int]
    assistant_masks: list[int]


def render(tokenizer, messages, tools=None, **kwargs) -> str:
    return tokenizer.apply_chat_template(messages, tools=tools or None, tokenize=False, **kwargs)


def end_of_turn_token(tokenizer) -> str:
    """The special token the template writes right after an assistant's text (e.g. <|im_end|>)."""
    text = render(tokenizer, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}])
    suffix = text[text.index(_PROBE) + len(_PROBE):]
    specials = set(tokenizer.all_special_tokens) | set(tokenizer.get_added_vocab())
    found = [(suffix.find(tok), -len(tok), tok) for tok in specials if tok and tok in suffix]
    if not found:
        raise UserError("the chat template writes no special token after an assistant turn; cannot mask")
    return min(found)[2]


def assistant_spans(tokenizer, messages, tools=None, train_on="all_assistant", eot=None, train_tool_calls=True):
    """Character spans [start, end) of the trained assistant turns in the full render."""
    eot = eot or end_of_turn_token(tokenizer)
    full = render(tokenizer, messages, tools)
    if train_on == "all":  # every token trains (a plain language-modeling loss)
        return full, [(0, len(full))]
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not train_tool_calls:
        turns = [i for i in turns if not messages[i].get("tool_calls")]
    if train_on == "last_assistant":
        turns = turns[-1:]
    elif train_on != "all_assistant":
        raise UserError(f"data.train_on must be all_assistant, last_assistant or all, got {train_on!r}")
    spans = []
    for i in turns:
        prompts = {render(tokenizer, messages[:i], tools, add_generation_prompt=True, enable_thinking=flag)
                   for flag in (True, False)}
        starts = [len(p) for p in prompts if full.startswith(p)]
        if not starts:
            raise UserError(f"the chat template renders the conversation before assistant turn {i} differently "
                            f"from the full conversation; cannot locate that turn")
        start = max(starts)
        end = full.find(eot, start)
        if end < 0:
            raise UserError(f"assistant turn {i} has no end-of-turn token {eot!r} in the rendered text")
        spans.append((start, end + len(eot)))
    return full, spans


def encode(tokenizer, messages, tools=None, train_on="all_assistant", eot=None, train_tool_calls=True) -> Encoded:
    text, spans = assistant_spans(tokenizer, messages, tools, train_on, eot, train_tool_calls)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(s <= start < e for s, e in spans)) for start, _ in enc["offset_mapping"]]
    return Encoded(enc["input_ids"], mask)
