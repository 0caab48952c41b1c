"""Enqueueing a turn for a stage (or a pre-flight request): only the id travels."""
from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from celery.utils import uuid
from kombu import Producer

from orchestrator.app import app
from orchestrator.stages import Stage


def enqueue(stage: Stage, turn_id: int) -> None:
    send_many(stage.task_name, stage.queue, [turn_id])


def enqueue_many(stage: Stage, turn_ids: Iterable[int]) -> None:
    send_many(stage.task_name, stage.queue, turn_ids)


def send_many(task_name: str, queue: str, ids: Iterable[int | str]) -> None:
    """A task per id through one producer (one connection): a run of ten thousand trajectories is
    ten thousand LPUSHes and nothing more."""
    parent = app.current_worker_task  # the task that enqueues, linked as send_task links it (Flower's parent and root)
    links = {"parent_id": parent.request.id, "root_id": parent.request.root_id or parent.request.id} if parent else {}
    with app.producer_or_acquire() as producer:
        for one_id in ids:
            _publish(producer, task_name, queue, one_id, links)


def _publish(producer: Producer, task_name: str, queue: str, one_id: int | str, links: dict[str, str]) -> None:
    """Celery's own task message (protocol 2, as `send_task` builds it) put on the queue by name,
    through the anonymous exchange, where `send_task` puts it too. `send_task`'s routing and its
    check of the queue's declaration were 40 % of a publish's CPU, for a queue whose name is all
    there is to know. The arguments' reprs (what Flower shows) are what Celery's saferepr makes of
    a one-id list, made without it."""
    message = app.amqp.create_task_message(uuid(), task_name, [one_id], None, reply_to=app.thread_oid, ignore_result=None,
                                           argsrepr=repr([one_id]), kwargsrepr="{}", **links)
    producer.publish(message.body, exchange="", routing_key=queue, headers=message.headers, **_publish_options(), **message.properties)


@lru_cache(maxsize=1)
def _publish_options() -> dict:
    """The app's publishing settings, read once: a lookup in Celery's settings costs as much as a
    third of the message's own making."""
    conf = app.conf
    return {"serializer": conf.task_serializer, "retry": conf.task_publish_retry, "retry_policy": conf.task_publish_retry_policy}
