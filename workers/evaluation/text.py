"""Text that came from a child (exception messages, tracebacks, compiler logs), made safe to
store and show: valid UTF-8 (lone surrogates replaced), no NUL or other control characters
but newlines and tabs, and bounded in length. Postgres rejects NUL bytes in text columns, so a
turn whose error carried one could never be stored."""
from __future__ import annotations

import re

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def clean(value, limit: int) -> str:
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit * 2:
        text = text[:limit] + text[-limit:]
    text = text.encode("utf-8", "replace").decode("utf-8", "replace")
    text = CONTROL.sub("\ufffd", text)
    if len(text) <= limit:
        return text
    head = limit * 2 // 3  # the start and the end of a long message (a traceback ends with the error)
    return text[:head] + " … " + text[-(limit - head - 3):]


def clean_tree(value, limit: int):
    """clean() applied to every string in a JSON-like structure (lists, dicts, numbers kept)."""
    if isinstance(value, str):
        return clean(value, limit)
    if isinstance(value, list):
        return [clean_tree(v, limit) for v in value]
    if isinstance(value, dict):
        return {clean(k, 200): clean_tree(v, limit) for k, v in value.items()}
    return value
