"""Keeps a claimed turn's lease alive while its worker is working, so leases can be short: a worker
that dies stops renewing, and the reconciler hands its turn on within one lease."""
from __future__ import annotations

import logging
import threading

from db import turns as turn_queries
from db.session import statement_scope

log = logging.getLogger("kturn.heartbeat")


class LeaseHeartbeat:
    def __init__(self, url: str, claim: turn_queries.Claim, lease_seconds: float):
        self._url, self._claim, self._lease = url, claim, lease_seconds
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{claim.turn_id}", daemon=True)

    def __enter__(self) -> LeaseHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stopped.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stopped.wait(self._lease / 3):
            try:
                with statement_scope(self._url) as db:
                    if not turn_queries.extend_lease(db, self._claim, self._lease):
                        log.warning("turn %s: lease lost (handed on or cancelled)", self._claim.turn_id)
                        return
            except Exception:  # a database blip must not kill the work; the next beat retries
                log.exception("turn %s: lease renewal failed", self._claim.turn_id)
