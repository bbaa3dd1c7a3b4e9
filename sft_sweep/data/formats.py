"""Every common SFT row format -> one normalized chat row.

Normalized row: {"messages": [...], "tools": list | None, "id": str, "source": str, "tags": list}
Messages have `role` (system/user/assistant/tool) and `content`; assistant turns may carry
`tool_calls` ([{"type": "function", "function": {"name", "arguments": <JSON string>}}]) and
`reasoning_content`. Arguments are kept as JSON text: chat templates accept it, and it keeps one
Arrow schema across rows whose argument objects differ.

A `text` row has no messages (nothing to mask): {"text": ..., "messages": None, ...}.
"""

import json

FORMATS = ("messages", "alpaca", "sharegpt", "prompt_completion", "text", "mapping")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "function_call": "assistant", "observation": "tool", "tool": "tool"}


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


def _arguments_json(arguments) -> str:
    if isinstance(arguments, str):
        try:
            json.loads(arguments)
        except json.JSONDecodeError:
            raise RowError(f"tool-call arguments are not valid JSON: {arguments[:60]!r}") from None
        return arguments
    return json.dumps(arguments, ensure_ascii=False)


def _tool_calls(calls) -> list[dict]:
    out = []
    for call in calls:
        fn = call.get("function", call) if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not fn.get("name"):
            raise RowError("tool call without a function name")
        out.append({"type": "function", "function": {"name": fn["name"],
                                                     "arguments": _arguments_json(fn.get("arguments", {}))}})
    return out


def _message(m) -> dict:
    if not isinstance(m, dict):
        raise RowError(f"message is not an object: {str(m)[:40]!r}")
    content = m.get("content")
    out = {"role": m.get("role"), "content": "" if content is None else content}
    if not isinstance(out["content"], str):
        raise RowError(f"message content is not text: {str(content)[:40]!r}")
    if m.get("tool_calls"):
        out["tool_calls"] = _tool_calls(m["tool_calls"])
    if m.get("reasoning_content"):
        out["reasoning_content"] = m["reasoning_content"]
    return out


def _tools(tools):
    if tools in (None, "", []):
        return None
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError:
            raise RowError("`tools` is not valid JSON") from None
    if not isinstance(tools, list):
        raise RowError("`tools` is not a list")
    return tools


def from_messages(row):
    messages = row.get("messages", row.get("conversations"))
    if not isinstance(messages, list):
        raise RowError("`messages` is not a list")
    return [_message(m) for m in messages]


def from_alpaca(row):
    messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    for turn in row.get("history") or []:
        messages += [{"role": "user", "content": turn[0]}, {"role": "assistant", "content": turn[1]}]
    prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
    return messages + [{"role": "user", "content": prompt}, {"role": "assistant", "content": row["output"]}]


def from_sharegpt(row):
    messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    for turn in row["conversations"]:
        role = SHAREGPT_ROLES.get(turn.get("from"))
        if role is None:
            raise RowError(f"unknown ShareGPT speaker {turn.get('from')!r}")
        value = turn.get("value") or ""
        if turn["from"] == "function_call":
            try:
                call = json.loads(value)
            except json.JSONDecodeError:
                raise RowError(f"function_call value is not valid JSON: {value[:60]!r}") from None
            calls = call if isinstance(call, list) else [call]
            messages.append({"role": "assistant", "content": "", "tool_calls": _tool_calls(calls)})
        else:
            messages.append({"role": role, "content": value})
    return messages


def from_prompt_completion(row):
    prompt, completion = row["prompt"], row["completion"]
    if isinstance(prompt, list):  # conversational prompt/completion
        return [_message(m) for m in prompt + completion]
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
