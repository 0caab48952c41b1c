"""Starting a run: every row in one transaction, then turn 0 of each trajectory enqueued."""
from __future__ import annotations

from db import runs as run_queries
from db.session import session_scope
from orchestrator.problems import ProblemSpec
from orchestrator.queues import enqueue_many
from orchestrator.run_config import RunConfig
from orchestrator.settings import get_settings
from orchestrator.stages import GENERATE


def start_run(config: RunConfig, problems: list[ProblemSpec]) -> int:
    new_problems = [run_queries.NewProblem(p.name, p.level, p.source, p.source_hash, p.origin, p.stable_key, p.problem_id, p.instance_id, p.prompt)
                    for p in problems]
    with session_scope(get_settings().sqlalchemy_url) as session:
        run_id, turn_ids = run_queries.create(session, config.model_dump(mode="json"), new_problems, config.samples)
    # Committed first: if enqueueing fails here, `kturn reconcile` finds the pending turns.
    enqueue_many(GENERATE, turn_ids)
    return run_id
