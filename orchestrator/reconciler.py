"""Re-enqueue what was lost: turns whose lease ran out (their worker died) and waiting turns whose
message is gone (a wiped or restarted Redis). Postgres alone says what must happen next."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from db import turns as turn_queries
from db.models import TrajectoryStatus, TurnState, utcnow
from db.session import session_scope
from orchestrator.broker_queue import queued_turns
from orchestrator.pipeline import end_trajectory
from orchestrator.queues import enqueue
from orchestrator.settings import get_settings
from orchestrator.stages import BY_WAITING_STATE, BY_WORKING_STATE, Stage

log = logging.getLogger("kturn.reconciler")


@dataclass
class ReconcileReport:
    expired: list[int] = field(default_factory=list)
    requeued: list[tuple[str, int]] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def reconcile(older_than_s: float = 60.0) -> ReconcileReport:
    """`older_than_s` is the grace a waiting turn gets before its message counts as lost."""
    settings = get_settings()
    report = ReconcileReport()
    to_enqueue: dict[int, Stage] = {}
    in_broker = queued_turns()
    now = utcnow()
    with session_scope(settings.sqlalchemy_url) as session:
        for turn in turn_queries.expired_leases(session, now):
            stage = BY_WORKING_STATE[turn.state]
            report.expired.append(turn.id)
            if turn.stage_attempts >= settings.max_attempts:
                turn.state, turn.error = TurnState.failed.value, f"{stage.name} lost its worker {turn.stage_attempts} times (lease expired)"
                end_trajectory(session, turn.trajectory_id, turn.trajectory.run_id, TrajectoryStatus.failed, None)
                report.failed.append(turn.id)
            else:
                turn_queries.release(session, turn, stage.waiting)
                to_enqueue[turn.id] = stage
        for turn in turn_queries.waiting_since(session, now - timedelta(seconds=older_than_s)):
            stage = BY_WAITING_STATE[turn.state]
            if in_broker is None or (stage.task_name, turn.id) not in in_broker:
                to_enqueue.setdefault(turn.id, stage)
    for turn_id, stage in to_enqueue.items():
        enqueue(stage, turn_id)
        report.requeued.append((stage.name, turn_id))
        log.info("turn %s re-enqueued for %s", turn_id, stage.name)
    return report
