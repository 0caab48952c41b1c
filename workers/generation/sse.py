"""Server-sent events as model servers stream them: `data: {json}` per event, `data: [DONE]` last."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

DONE = b"[DONE]"


def sse_json(response: httpx.Response) -> Iterator[Any]:
    """The JSON payload of each `data:` event until `[DONE]` (or the end of the body).

    Reads raw bytes and splits events itself: the chunks of a cumulative stream grow with the
    answer, and decoding each to str before parsing would cost a second pass over it."""
    buffer = bytearray()
    for block in response.iter_bytes():
        buffer += block
        start = 0
        while (end := buffer.find(b"\n\n", start)) >= 0:
            event = bytes(buffer[start:end])
            start = end + 2
            for line in event.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue  # comments (keep-alives) and other fields
                data = line[5:].strip()
                if data == DONE:
                    return
                yield json.loads(data)
        del buffer[:start]
