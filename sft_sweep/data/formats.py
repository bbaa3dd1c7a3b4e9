"""Every common SFT row format -> one normalized chat row.

Normalized row: {"messages": [...], "tools": list | None, "id": str, "source": str, "tags": list}
Messages have `role` (system/user/assistant/tool) and text `content`; assistant turns may carry
`tool_calls` ([{"type": "function", "function": {"name", "arguments": <mapping>}}]) and
`reasoning_content`. This is the convention of `apply_chat_template` and TRL: templates that write
arguments with `tojson` (Qwen2.5's, Llama-3.1's) need a mapping, or they train a quoted string of JSON
where the model must emit an object; templates that accept both render a mapping as the same JSON.
Tools are OpenAI's `{"type": "function", "function": {...}}` (a bare function schema is wrapped), as a
server passes them to the template at inference.

Whatever a source writes is normalized to that: tool-call arguments as JSON text or as an object;
ShareGPT/glaive `function_call` turns; OpenAI `tool_calls` and the older `function_call`/`function`;
typed content parts -- OpenAI's (`{"type": "text", "text": ...}`) and LLaMA-Factory v1's (`{"type":
"text" | "reasoning" | "tool_call", "value": ...}`). Image, audio, video and file parts are refused:
the models trained here read text only.

A `text` row has no messages (nothing to mask): {"text": ..., "messages": None, ...}.
"""

import json

FORMATS = ("messages", "alpaca", "sharegpt", "prompt_completion", "text", "mapping")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "function_call": "assistant", "observation": "tool", "tool": "tool"}
# Content parts a text-only model cannot read (OpenAI's, transformers' and LLaMA-Factory's names).
MEDIA_PARTS = {"image", "image_url", "input_image", "audio", "input_audio", "video", "video_url", "file"}
# Text parts of one message are joined as vLLM's OpenAI server joins them for a text-only template.
PART_SEPARATOR = "\n"
# How Alpaca's instruction and input are joined into the user turn (LLaMA-Factory's join).
ALPACA_JOIN = "\n"


class RowError(ValueError):
    """A row that can't be normalized; the message is the reason (the caller adds file:line)."""


def detect_format(row: dict) -> str:
    if "messages" in row:
        return "messages"
    if "conversations" in row:
        turns = row["conversations"]
        first = turns[0] if isinstance(turns, list) and turns else {}
        return "sharegpt" if isinstance(first, dict) and "from" in first else "messages"
    if "instruction" in row and "output" in row:
        return "alpaca"
    if "prompt" in row and "completion" in row:
        return "prompt_completion"
    if "text" in row:
        return "text"
    raise RowError(f"unknown row format (keys: {sorted(row)[:8]}); set the source's format and field_map")


def _json(text: str, what: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise RowError(f"{what} are not valid JSON: {text[:60]!r}") from None


def _arguments(arguments) -> dict:
    """Tool-call arguments as a mapping, from JSON text or an object (none: no arguments)."""
    value = _json(arguments, "tool-call arguments") if isinstance(arguments, str) else arguments
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RowError(f"tool-call arguments are not a JSON object: {str(arguments)[:60]!r}")
    return value


def _tool_calls(calls) -> list[dict]:
    """OpenAI `tool_calls` entries or bare {"name", "arguments"} calls -> the normalized list."""
    out = []
    for call in calls if isinstance(calls, list) else [calls]:
        fn = call.get("function", call) if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not fn.get("name"):
            raise RowError("tool call without a function name")
        out.append({"type": "function", "function": {"name": fn["name"], "arguments": _arguments(fn.get("arguments"))}})
    return out


def _parts(content, i: int) -> tuple[str, str | None, list]:
    """A message's content -> (text, reasoning or None, tool calls). Plain text passes through; a list of
    typed parts is read part by part."""
    if content is None:
        return "", None, []
    if isinstance(content, str):
        return content, None, []
    if not isinstance(content, list):
        raise RowError(f"message {i} content is neither text nor a list of parts: {str(content)[:40]!r}")
    texts, reasoning, calls = [], [], []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
            continue
        kind = part.get("type") if isinstance(part, dict) else None
        value = part.get("text", part.get("value")) if isinstance(part, dict) else None
        if kind in MEDIA_PARTS:
            raise RowError(f"message {i} has a part of type {kind!r}: sft-sweep trains text-only models (drop "
                           f"the part, or the row)")
        if kind == "tool_call":
            calls.append(_json(value, "tool_call part values") if isinstance(value, str) else value)
        elif kind in ("text", "reasoning") and isinstance(value, str):
            (texts if kind == "text" else reasoning).append(value)
        else:
            raise RowError(f"message {i} has a content part that is not text, reasoning or a tool call: "
                           f"{str(part)[:60]!r}")
    return PART_SEPARATOR.join(texts), PART_SEPARATOR.join(reasoning) or None, calls


def _message(m, i: int) -> dict:
    if not isinstance(m, dict):
        raise RowError(f"message is not an object: {str(m)[:40]!r}")
    role = "tool" if m.get("role") == "function" else m.get("role")  # OpenAI's older function result
    text, reasoning, calls = _parts(m.get("content"), i)
    out = {"role": role, "content": text}
    listed = m.get("tool_calls") or []
    calls += listed if isinstance(listed, list) else [listed]
    if m.get("function_call"):  # OpenAI's older single call
        calls.append(m["function_call"])
    if calls:
        out["tool_calls"] = _tool_calls(calls)
    reasoning = m.get("reasoning_content") or reasoning
    if reasoning:
        out["reasoning_content"] = reasoning
    return out


def _tools(tools):
    """The row's tool schemas as OpenAI's list of {"type": "function", "function": {...}} (JSON text parsed,
    a bare function schema wrapped: what a server hands the template at inference)."""
    if tools in (None, "", []):
        return None
    if isinstance(tools, str):
        tools = _json(tools, "`tools`")
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise RowError("`tools` is not a list of tool schemas")
    return [t if "function" in t or "name" not in t else {"type": "function", "function": t} for t in tools]


def from_messages(row):
    messages = row.get("messages", row.get("conversations"))
    if not isinstance(messages, list):
        raise RowError("`messages` is not a list")
    return [_message(m, i) for i, m in enumerate(messages)]


def from_alpaca(row):
    messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    for turn in row.get("history") or []:
        messages += [{"role": "user", "content": turn[0]}, {"role": "assistant", "content": turn[1]}]
    prompt = row["instruction"] + (ALPACA_JOIN + row["input"] if row.get("input") else "")
    return messages + [{"role": "user", "content": prompt}, {"role": "assistant", "content": row["output"]}]


def from_sharegpt(row):
    messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    for turn in row["conversations"]:
        role = SHAREGPT_ROLES.get(turn.get("from"))
        if role is None:
            raise RowError(f"unknown ShareGPT speaker {turn.get('from')!r}")
        value = turn.get("value") or ""
        if turn["from"] == "function_call":  # {"name", "arguments"} as JSON text (or a list of them)
            messages.append({"role": "assistant", "content": "",
                             "tool_calls": _tool_calls(_json(value, "function_call values"))})
        else:
            messages.append({"role": role, "content": value})
    return messages


def from_prompt_completion(row):
    prompt, completion = row["prompt"], row["completion"]
    if isinstance(prompt, list):  # conversational prompt/completion
        return [_message(m, i) for i, m in enumerate(prompt + completion)]
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]


def from_mapping(row, field_map: dict):
    """`field_map` maps a column to a role, e.g. {question: user, golden: assistant}."""
    order = {"system": 0, "user": 1, "assistant": 2}
    messages = []
    for column, role in sorted(field_map.items(), key=lambda kv: order.get(kv[1], 9)):
        if column not in row:
            raise RowError(f"field_map column {column!r} missing from row")
        value = row[column]
        messages.append({"role": role, "content": "" if value is None else str(value)})
    return messages


# Column names that usually hold the question / the answer of a flat table (matched case-insensitively).
QUESTION_COLUMNS = ("question", "input", "query", "prompt", "problem", "instruction", "body", "source")
ANSWER_COLUMNS = ("answer", "output", "response", "golden", "target", "solution", "completion", "label")


def suggest_field_map(columns: list[str]) -> dict | None:
    """{question column: user, answer column: assistant} when the column names say which is which."""
    lower = {c.lower(): c for c in columns}
    question = next((lower[c] for c in QUESTION_COLUMNS if c in lower), None)
    answer = next((lower[c] for c in ANSWER_COLUMNS if c in lower), None)
    return {question: "user", answer: "assistant"} if question and answer else None


def normalize(row, fmt: str, field_map: dict | None = None) -> dict:
    """One raw row -> the normalized schema (raises RowError with the reason)."""
    if not isinstance(row, dict):
        raise RowError("row is not a JSON object")
    fmt = detect_format(row) if fmt == "auto" else fmt
    meta = {"id": str(row["id"]) if row.get("id") is not None else None, "tags": list(row.get("tags") or [])}
    if fmt == "text":
        if not isinstance(row.get("text"), str):
            raise RowError("`text` is missing or not text")
        return {"text": row["text"], "messages": None, "tools": None, **meta}
    try:
        if fmt == "messages":
            messages = from_messages(row)
        elif fmt == "alpaca":
            messages = from_alpaca(row)
        elif fmt == "sharegpt":
            messages = from_sharegpt(row)
        elif fmt == "prompt_completion":
            messages = from_prompt_completion(row)
        elif fmt == "mapping":
            if not field_map:
                raise RowError("format mapping needs a field_map")
            messages = from_mapping(row, field_map)
        else:
            raise RowError(f"unknown format {fmt!r} (one of auto, {', '.join(FORMATS)})")
    except (KeyError, TypeError, IndexError) as exc:
        raise RowError(f"not a valid {fmt} row ({type(exc).__name__}: {exc})") from None
    return {"messages": messages, "tools": _tools(row.get("tools")), **meta}
