"""The Celery app. Workers start the ecosystem's way:

    celery -A orchestrator.app worker -Q generate -c 1

Messages carry only turn ids; Postgres owns the state machine, so there is no result backend,
no chains or chords, and acknowledgement happens after the task (a killed worker's message is
delivered again and the duplicate finds its turn already claimed or done).
"""
from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from orchestrator.settings import get_settings
from orchestrator.stages import STAGES

TASK_MODULES = ["workers.generation.tasks", "workers.cleaning.tasks", "workers.evaluation.tasks"]


def create_app() -> Celery:
    settings = get_settings()
    celery = Celery("kturn", broker=settings.broker_url, include=TASK_MODULES)
    celery.conf.update(
        task_queues=[Queue(stage.queue, Exchange(stage.queue), routing_key=stage.queue) for stage in STAGES],
        task_routes={stage.task_name: {"queue": stage.queue} for stage in STAGES},
        task_default_queue=STAGES[0].queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        # Flower watches these: workers per queue and the tasks of a run.
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout},
        worker_hijack_root_logger=False,
    )
    return celery


app = create_app()
