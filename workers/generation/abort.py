"""Ending a running generation from any thread: a loop seen in the stream, or a cancelled run."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from workers.generation.request import FinishReason, LoopAbort

LOOP = "loop"
CANCELLED = "cancelled"


class AbortSignal:
    """Set once with a reason; whoever holds the running request registers how to stop it on the
    server (e.g. SGLang's /abort_request), and the reader checks `reason` between chunks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reason: str | None = None
        self._on_abort: Callable[[], None] | None = None
        self._aborted = threading.Event()

    @property
    def reason(self) -> str | None:
        return self._reason

    def abort(self, reason: str) -> bool:
        """First call wins (True); the registered server-side stop runs in the caller's thread."""
        with self._lock:
            if self._reason is not None:
                return False
            self._reason = reason
            stop = self._on_abort
        self._aborted.set()
        if stop is not None:
            stop()
        return True

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake at once on an abort (a turn held through an outage, its run cancelled)."""
        self._aborted.wait(seconds)

    def while_running(self, stop: Callable[[], None]) -> _Registration:
        """`with signal.while_running(stop):` — `stop` is called if an abort comes (or came) meanwhile."""
        return _Registration(self, stop)

    def _register(self, stop: Callable[[], None] | None) -> str | None:
        with self._lock:
            self._on_abort = stop
            return self._reason


class _Registration:
    def __init__(self, signal: AbortSignal, stop: Callable[[], None]) -> None:
        self._signal, self._stop = signal, stop

    def __enter__(self) -> None:
        if self._signal._register(self._stop) is not None:
            self._stop()  # aborted before the request reached the server

    def __exit__(self, *_exc: object) -> None:
        self._signal._register(None)


def finish_reason(aborted_for: str | None, server: Any, loop: LoopAbort | None) -> dict[str, Any]:
    """The server's finish_reason as received, unless kturn ended the answer: then what kturn did,
    with the server's own object under "server"."""
    if aborted_for == LOOP and loop is not None:
        return {"type": FinishReason.LOOP.value, "onset": loop.onset_char, "period": loop.period, "server": server}
    if aborted_for == CANCELLED:
        return {"type": FinishReason.ABORT.value, "reason": CANCELLED, "server": server}
    return server
