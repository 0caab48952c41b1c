"""Enqueueing a turn for a stage: only the turn id travels."""
from __future__ import annotations

from orchestrator.app import app
from orchestrator.stages import Stage


def enqueue(stage: Stage, turn_id: int) -> None:
    app.send_task(stage.task_name, args=[turn_id], queue=stage.queue, routing_key=stage.queue)
