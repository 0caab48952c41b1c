"""Enqueueing a turn for a stage: only the turn id travels."""
from __future__ import annotations

from collections.abc import Iterable

from orchestrator.app import app
from orchestrator.stages import Stage


def enqueue(stage: Stage, turn_id: int) -> None:
    app.send_task(stage.task_name, args=[turn_id], queue=stage.queue, routing_key=stage.queue)


def enqueue_many(stage: Stage, turn_ids: Iterable[int]) -> None:
    """Many turns through one producer (one connection, one queue declaration): a run of ten
    thousand trajectories is ten thousand LPUSHes and nothing more."""
    with app.producer_or_acquire() as producer:
        for turn_id in turn_ids:
            app.send_task(stage.task_name, args=[turn_id], queue=stage.queue, routing_key=stage.queue, producer=producer)
