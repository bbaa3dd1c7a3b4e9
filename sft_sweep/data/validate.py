"""Validation and cleaning of normalized rows.

`check_row` returns the reason a row is rejected, or None; on the way it cleans the row in
place: control characters stripped, over-long assistant answers cut at `max_answer_chars`.
"""

import re

ROLES = {"system", "user", "assistant", "tool"}
# C0 controls except tab, newline, carriage return; DEL.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean_text(text: str) -> str:
    # Valid UTF-8 check: a lone surrogate (from a JSON "\ud800" escape) can't be encoded.
    if not text.isascii():
        text.encode("utf-8")
    return _CONTROL.sub("", text) if _CONTROL.search(text) else text


def check_row(row: dict, max_answer_chars: int | None) -> str | None:
    try:
        if row["messages"] is None:
            row["text"] = clean_text(row["text"])
            return None if row["text"].strip() else "empty text"
        return _check_messages(row["messages"], max_answer_chars)
    except UnicodeEncodeError:
        return "text is not valid UTF-8"


def _check_messages(messages: list[dict], max_answer_chars: int | None) -> str | None:
    roles = [m["role"] for m in messages]
    for i, role in enumerate(roles):
        if role not in ROLES:
            return f"unknown role {role!r} in message {i}"
    if "user" not in roles:
        return "no user turn"
    if "assistant" not in roles:
        return "no assistant turn"
    previous = None
    for i, m in enumerate(messages):
        m["content"] = clean_text(m["content"])
        if m.get("reasoning_content"):
            m["reasoning_content"] = clean_text(m["reasoning_content"])
        if m["role"] == "assistant":
            if not m["content"].strip() and not m.get("tool_calls"):
                return f"assistant message {i} has neither content nor tool calls"
            if max_answer_chars and len(m["content"]) > max_answer_chars:
                m["content"] = m["content"][:max_answer_chars]
        if m["role"] == "tool":
            caller = previous
            if caller is None or caller["role"] != "assistant" or not caller.get("tool_calls"):
                return f"tool message {i} does not follow an assistant tool call"
        if m["role"] != "tool":
            previous = m
    return None
