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

Some templates render a turn differently once a later user turn follows: Qwen3's drops the
reasoning of every turn before the last user message, so in a multi-turn agent conversation
the context a turn was answered in is not a prefix of the whole render. Such a conversation is
trained as one sequence per user turn (`encode_sequences`): the messages up to the next user
turn, training only the turns that answer it -- each turn in the context the model sees when it
answers, never in one it never sees.
"""

from dataclasses import dataclass

from sft_sweep.errors import UserError

_PROBE = "\x00sft-sweep-probe\x00"
TRAIN_ON = ("all_assistant", "last_assistant", "all")


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


@dataclass(frozen=True)
class TemplateSupport:
    """What a chat template renders of a conversation, found by rendering probes (a template silently drops what
    it has no place for: Llama-2's drops tool calls, Qwen2.5's reasoning)."""

    tool_calls: bool  # an assistant's tool calls (name and arguments) and the tool's result
    tools: bool  # the tool schemas passed as `tools`
    reasoning: bool  # an assistant's reasoning_content

    def missing(self, row: dict) -> list[str]:
        """What `row` holds that the template would drop, apart from reasoning (which only loses its trace)."""
        messages = row["messages"] or []
        missing = []
        if not self.tool_calls and any(m.get("tool_calls") or m["role"] == "tool" for m in messages):
            missing.append("tool calls")
        if not self.tools and row.get("tools"):
            missing.append("tool schemas")
        return missing

    def drops_reasoning(self, row: dict) -> bool:
        return not self.reasoning and any(m.get("reasoning_content") for m in row["messages"] or [])


def template_support(tokenizer) -> TemplateSupport:
    call = {"type": "function", "function": {"name": "sft_sweep_probe_call", "arguments": {"sft_sweep_probe_key": 1}}}
    tool = {"type": "function", "function": {"name": "sft_sweep_probe_tool", "description": "probe",
                                             "parameters": {"type": "object", "properties": {}}}}
    user = {"role": "user", "content": "question"}

    def renders(messages, *needles, tools=None) -> bool:
        try:
            text = render(tokenizer, messages, tools)
        except Exception:  # a template that refuses the probe has no place for it (jinja raise_exception, filters)
            return False
        return all(needle in text for needle in needles)

    return TemplateSupport(
        tool_calls=renders([user, {"role": "assistant", "content": "", "tool_calls": [call]},
                            {"role": "tool", "content": "sft_sweep_probe_result"},
                            {"role": "assistant", "content": "answer"}],
                           "sft_sweep_probe_call", "sft_sweep_probe_key", "sft_sweep_probe_result"),
        tools=renders([user, {"role": "assistant", "content": "answer"}], "sft_sweep_probe_tool", tools=[tool]),
        reasoning=renders([user, {"role": "assistant", "content": "answer",
                                  "reasoning_content": "sft_sweep_probe_thought"}], "sft_sweep_probe_thought"))


class TurnNotFound(UserError):
    """An assistant turn's prompt, rendered alone, is not a prefix of the whole conversation's render."""


def trained_turns(messages, train_on="all_assistant", train_tool_calls=True) -> list[int]:
    """Indices of the assistant turns the loss sees (train_on=all: none is singled out, every token trains)."""
    if train_on not in TRAIN_ON:
        raise UserError(f"data.train_on must be {', '.join(TRAIN_ON)}, got {train_on!r}")
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not train_tool_calls:
        turns = [i for i in turns if not messages[i].get("tool_calls")]
    return turns[-1:] if train_on == "last_assistant" else turns


def assistant_spans(tokenizer, messages, tools=None, train_on="all_assistant", eot=None, train_tool_calls=True,
                    turns=None):
    """Character spans [start, end) of the trained assistant turns in the full render (`turns`: which ones, when
    the caller has chosen them)."""
    eot = eot or end_of_turn_token(tokenizer)
    full = render(tokenizer, messages, tools)
    if train_on == "all":  # every token trains (a plain language-modeling loss)
        return full, [(0, len(full))]
    spans = []
    for i in trained_turns(messages, train_on, train_tool_calls) if turns is None else turns:
        prompts = {render(tokenizer, messages[:i], tools, add_generation_prompt=True, enable_thinking=flag)
                   for flag in (True, False)}
        starts = [len(p) for p in prompts if full.startswith(p)]
        if not starts:
            raise TurnNotFound(f"the chat template renders the conversation before assistant turn {i} differently "
                               f"from the full conversation; cannot locate that turn")
        start = max(starts)
        end = full.find(eot, start)
        if end < 0:
            raise UserError(f"assistant turn {i} has no end-of-turn token {eot!r} in the rendered text")
        spans.append((start, end + len(eot)))
    return full, spans


def _tokenize(tokenizer, text: str, spans) -> Encoded:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(s <= start < e for s, e in spans)) for start, _ in enc["offset_mapping"]]
    return Encoded(enc["input_ids"], mask)


def encode(tokenizer, messages, tools=None, train_on="all_assistant", eot=None, train_tool_calls=True) -> Encoded:
    return _tokenize(tokenizer, *assistant_spans(tokenizer, messages, tools, train_on, eot, train_tool_calls))


def encode_sequences(tokenizer, messages, tools=None, train_on="all_assistant", eot=None,
                     train_tool_calls=True) -> list[Encoded]:
    """The conversation as one sequence, or -- where the template renders an earlier turn differently once a later
    user turn follows (module docstring) -- one sequence per user turn, each ending before the next user turn and
    training the turns that answer it."""
    try:
        return [encode(tokenizer, messages, tools, train_on, eot, train_tool_calls)]
    except TurnNotFound:
        users = [i for i, m in enumerate(messages) if m["role"] == "user"]
        if len(users) < 2:
            raise
    turns, sequences = trained_turns(messages, train_on, train_tool_calls), []
    for k, end in enumerate(users[1:] + [len(messages)]):
        own = [i for i in turns if (users[k] if k else 0) <= i < end]
        if own:
            sequences.append(_tokenize(tokenizer, *assistant_spans(tokenizer, messages[:end], tools, train_on, eot,
                                                                   turns=own)))
    return sequences
