"""Re-enqueue what was lost: turns whose lease ran out (their worker died) or whose holder was a
process of this host that has ended (no need to wait for its lease), and waiting turns whose
message is gone (a wiped or restarted Redis, or a worker that died holding it). Postgres alone
says what must happen next."""
from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from db import turns as turn_queries
from db.session import statement_scope
from orchestrator.broker_queue import queued_turns
from orchestrator.pipeline import hand_on_from_ended_holders, retry_or_fail
from orchestrator.queues import enqueue
from orchestrator.settings import get_settings
from orchestrator.stages import BY_WAITING_STATE, BY_WORKING_STATE

log = logging.getLogger("kturn.reconciler")

# Turns looked at per pass and kind, so a pass costs the same on a run of ten thousand trajectories;
# the oldest go first and the next pass takes the rest.
PASS_LIMIT = 2000


@dataclass
class ReconcileReport:
    expired: list[int] = field(default_factory=list)
    ended_holders: list[int] = field(default_factory=list)  # held by a process of this host that has ended
    requeued: list[tuple[str, int]] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    # What it left alone: working turns whose lease still runs (turn id, state, lease end), and the
    # database's clock when it looked.
    leased: list[tuple[int, str, datetime]] = field(default_factory=list)
    now: datetime | None = None

    def handed_on(self, stage_name: str, turn_id: int, outcome: str | None) -> None:
        """What retry_or_fail did with a claim: "requeued", "failed", or None (no longer held)."""
        if outcome == "requeued":
            self.requeued.append((stage_name, turn_id))
        elif outcome == "failed":
            self.failed.append(turn_id)


def reconcile(older_than_s: float = 60.0, limit: int = PASS_LIMIT) -> ReconcileReport:
    """`older_than_s` is the grace a waiting turn gets before its message counts as lost; a message
    delivered to a worker longer ago than that and still unacknowledged counts as lost too."""
    settings = get_settings()
    report = ReconcileReport()
    in_broker = queued_turns(unacked_within_s=older_than_s)
    with statement_scope(settings.sqlalchemy_url) as db:
        now = turn_queries.db_now(db)
        expired = turn_queries.expired_leases(db, now, limit)
        waiting = turn_queries.waiting_since(db, now - timedelta(seconds=older_than_s), limit)
        report.leased = turn_queries.live_leases(db, now, limit)
        report.now = now
        held_here = turn_queries.held_claims(db, f"{socket.gethostname()}:")
    for stage_name, turn_id, outcome in hand_on_from_ended_holders(held_here):
        report.ended_holders.append(turn_id)
        report.handed_on(stage_name, turn_id, outcome)
    report.leased = [lease for lease in report.leased if lease[0] not in report.ended_holders]
    for claim in expired:
        if claim.turn_id in report.ended_holders:
            continue
        stage = BY_WORKING_STATE[claim.working.value]
        report.expired.append(claim.turn_id)
        report.handed_on(stage.name, claim.turn_id, retry_or_fail(stage, claim, "lease expired: its worker stopped renewing it", lease_expired=True))
    for turn_id, state in waiting:
        stage = BY_WAITING_STATE[state]
        if in_broker is None or (stage.task_name, turn_id) not in in_broker:
            enqueue(stage, turn_id)
            report.requeued.append((stage.name, turn_id))
            log.info("turn %s re-enqueued for %s", turn_id, stage.name)
    return report
