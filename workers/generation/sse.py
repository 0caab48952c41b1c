"""Server-sent events as model servers stream them: `data: {json}` per event, `data: [DONE]` last."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

DONE = b"[DONE]"


class StreamCut(httpx.RemoteProtocolError):
    """The body ended before `data: [DONE]`: the server went away in the middle of an answer (it was
    killed or restarted), a dropped connection like any other, not an answer that ended."""


def sse_json(response: httpx.Response) -> Iterator[Any]:
    """The JSON payload of each `data:` event until `[DONE]`. A body that ends first raises StreamCut
    if it was an event stream (empty, or events, or one cut short); a body that is not one at all (a
    proxy's error page) just ends, and the caller finds no finish in it.

    Reads raw bytes and splits events itself: the chunks of a cumulative stream grow with the
    answer, and decoding each to str before parsing would cost a second pass over it."""
    buffer = bytearray()
    events = False
    for block in response.iter_bytes():
        buffer += block
        start = 0
        while (end := buffer.find(b"\n\n", start)) >= 0:
            event = bytes(buffer[start:end])
            start = end + 2
            events = True
            for line in event.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue  # comments (keep-alives) and other fields
                data = line[5:].strip()
                if data == DONE:
                    return
                yield json.loads(data)
        del buffer[:start]
    rest = bytes(buffer).strip()
    if events or not rest or rest.startswith(b"data:"):
        raise StreamCut("the stream ended before data: [DONE]", request=response.request)
