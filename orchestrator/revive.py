"""`kturn retry RUN`: failed trajectories get a new attempt of their failed turn, from the stage that
failed, and go on from there (their earlier turns, the last good ones, are kept as they are)."""
from __future__ import annotations

from db import runs as run_queries
from db.session import session_scope
from orchestrator.queues import enqueue
from orchestrator.settings import get_settings
from orchestrator.stages import BY_WAITING_STATE


def retry_failed(run_id: int) -> list[tuple[int, str]]:
    """Revive the run's failed trajectories and enqueue their turns; (turn id, stage) of each.
    Should the broker fail after the commit, `kturn reconcile` enqueues the waiting turns."""
    with session_scope(get_settings().sqlalchemy_url) as session:
        revived = run_queries.revive_failed(session, run_id)
    stages = [(turn_id, BY_WAITING_STATE[waiting]) for turn_id, waiting in revived]
    for turn_id, stage in stages:
        enqueue(stage, turn_id)
    return [(turn_id, stage.name) for turn_id, stage in stages]
