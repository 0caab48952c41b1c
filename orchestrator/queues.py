"""Enqueueing a turn for a stage (or a pre-flight request): only the id travels."""
from __future__ import annotations

from collections.abc import Iterable

from orchestrator.app import app
from orchestrator.stages import Stage


def enqueue(stage: Stage, turn_id: int) -> None:
    app.send_task(stage.task_name, args=[turn_id], queue=stage.queue, routing_key=stage.queue)


def enqueue_many(stage: Stage, turn_ids: Iterable[int]) -> None:
    send_many(stage.task_name, stage.queue, turn_ids)


def send_many(task_name: str, queue: str, ids: Iterable[int | str]) -> None:
    """A task per id through one producer (one connection, one queue declaration): a run of ten
    thousand trajectories is ten thousand LPUSHes and nothing more."""
    with app.producer_or_acquire() as producer:
        for one_id in ids:
            app.send_task(task_name, args=[one_id], queue=queue, routing_key=queue, producer=producer)
