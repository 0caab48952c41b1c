"""The turns a generate worker process is generating right now, each with the AbortSignal of its
request. One daemon thread asks the database every `poll_s` which of them are no longer
`generating` (their run was cancelled, or the reconciler handed the turn on) and aborts those, so
a cancelled run stops using the GPU within about a second instead of decoding on to the end."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from db import generation as generation_queries
from db.session import session_scope
from workers.generation import AbortSignal
from workers.generation.abort import CANCELLED

log = logging.getLogger("kturn.generation")


class InFlightTurns:
    def __init__(self, url: str, poll_s: float = 1.0) -> None:
        self._url, self._poll_s = url, poll_s
        self._signals: dict[int, AbortSignal] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def watching(self, turn_id: int) -> Iterator[AbortSignal]:
        signal = AbortSignal()
        with self._lock:
            self._signals[turn_id] = signal
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="kturn-in-flight", daemon=True)
                self._thread.start()
        try:
            yield signal
        finally:
            with self._lock:
                self._signals.pop(turn_id, None)

    def check_once(self) -> list[int]:
        """Abort the requests of turns that are no longer generating; returns their ids."""
        with self._lock:
            watched = dict(self._signals)
        if not watched:
            return []
        with session_scope(self._url) as session:
            stopped = generation_queries.no_longer_generating(session, watched)
        for turn_id in stopped:
            if watched[turn_id].abort(CANCELLED):
                log.info("turn %s: no longer generating (run cancelled or turn handed on): request aborted", turn_id)
        return stopped

    def _watch(self) -> None:
        while True:
            time.sleep(self._poll_s)
            try:
                self.check_once()
            except Exception:  # a database blip must not end the watch; the next poll retries
                log.exception("checking the in-flight turns failed")


@lru_cache(maxsize=4)
def in_flight_turns(url: str, poll_s: float) -> InFlightTurns:
    """The worker process's registry (created after the fork, on first use)."""
    return InFlightTurns(url, poll_s)
