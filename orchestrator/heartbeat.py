"""Keeps the leases of the turns this process works on alive, so leases can be short: a worker that
dies stops renewing, and the reconciler hands its turns on within one lease.

One thread per process renews every lease it holds, a third of a lease apart (started with the
first claim, again in a forked child). A thread of its own per task cost about a millisecond of CPU
to start and join, a fifth of what a task of a fast stage costs, and a threads pool of 128 slots
ran 128 of them."""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from db import turns as turn_queries
from db.session import statement_scope

log = logging.getLogger("kturn.heartbeat")


class LeaseKeeper:
    def __init__(self) -> None:
        self._forget()

    def _forget(self) -> None:
        """Nothing held and no thread: a forked child's state (the parent's thread is not in it)."""
        self._held: dict[turn_queries.Claim, tuple[str, float]] = {}  # claim -> (database URL, lease seconds)
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    @contextmanager
    def holding(self, url: str, claim: turn_queries.Claim, lease_seconds: float) -> Iterator[None]:
        """The claim's lease is renewed until the block ends."""
        try:
            with self._changed:
                self._held[claim] = (url, lease_seconds)
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._renew_forever, name="lease-keeper", daemon=True)
                    self._thread.start()
                self._changed.notify()
            yield
        finally:
            with self._changed:
                self._held.pop(claim, None)

    def _renew_forever(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._held)
                interval = min(lease for _url, lease in self._held.values()) / 3
            time.sleep(interval)  # a claim taken meanwhile is renewed at most a third of a lease after it
            with self._changed:
                held = list(self._held.items())
            for claim, (url, lease) in held:
                self._renew(url, claim, lease)

    def _renew(self, url: str, claim: turn_queries.Claim, lease_seconds: float) -> None:
        try:
            with statement_scope(url) as db:
                renewed = turn_queries.extend_lease(db, claim, lease_seconds)
        except Exception:  # a database blip must not stop the renewals; the next round retries
            log.exception("turn %s: lease renewal failed", claim.turn_id)
            return
        with self._changed:
            if not renewed and self._held.pop(claim, None) is not None:  # still held: not just stored meanwhile
                log.warning("turn %s: lease lost (handed on or cancelled)", claim.turn_id)


_KEEPER = LeaseKeeper()
os.register_at_fork(after_in_child=_KEEPER._forget)

keep_leased = _KEEPER.holding
