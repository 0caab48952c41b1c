"""The Celery app. Workers start the ecosystem's way:

    celery -A orchestrator.app worker -Q generate -c 1

Messages carry only turn ids; Postgres owns the state machine, so there is no result backend,
no chains or chords, and acknowledgement happens after the task (a killed worker's message is
delivered again and the duplicate finds its turn already claimed or done).
"""
from __future__ import annotations

import ctypes
import sys

from celery import Celery, bootsteps, signals
from celery.exceptions import ImproperlyConfigured
from kombu import Exchange, Queue

from orchestrator import broker
from orchestrator import pinning  # noqa: F401  (connects its signals: a GPU and cores of its own per pool process)
from orchestrator.settings import get_settings
from orchestrator.stages import EVALUATE, PREFLIGHT_QUEUE, PREFLIGHT_TASK, STAGES

TASK_MODULES = ["workers.generation.tasks", "workers.cleaning.tasks", "workers.building.tasks", "workers.evaluation.tasks"]


def create_app() -> Celery:
    settings = get_settings()
    if settings.half_configured():
        raise ImproperlyConfigured(settings.half_configured())
    broker.use_for_redis()
    celery = Celery("kturn", broker=settings.broker_url, include=TASK_MODULES)
    celery.conf.update(
        task_queues=[Queue(name, Exchange(name), routing_key=name) for name in [stage.queue for stage in STAGES] + [PREFLIGHT_QUEUE]],
        task_routes={**{stage.task_name: {"queue": stage.queue} for stage in STAGES}, PREFLIGHT_TASK: {"queue": PREFLIGHT_QUEUE}},
        task_default_queue=STAGES[0].queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        # Flower watches these: workers per queue and the tasks of a run (from task-received on;
        # task-sent would cost a PUBLISH per enqueue and tells Flower nothing the worker does not).
        worker_send_task_events=True,
        task_send_sent_event=False,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout},
        worker_hijack_root_logger=False,
    )
    celery.steps["consumer"].add(BatchedTaskEvents)
    return celery


# Seconds a worker may hold its task events before publishing them together.
EVENT_FLUSH_S = 0.5


class BatchedTaskEvents(bootsteps.StartStopStep):
    """Publish a worker's task events in batches (one PUBLISH per 24 events or per EVENT_FLUSH_S)
    instead of one per turn of the event loop: each task's received/started/succeeded otherwise
    costs three Redis round trips, more than the task itself. Flower reads batches as it reads
    single events. Only workers with an event loop (prefork) buffer task events at all."""

    requires = ("celery.worker.consumer.events:Events",)

    def __init__(self, c, **kwargs):
        super().__init__(c, **kwargs)
        self._timer = None

    def start(self, c):
        if c.hub is None or c.event_dispatcher is None:
            return
        c.event_dispatcher.on_send_buffered = None  # no flush per event; the buffer limit and the timer flush
        self._timer = c.hub.call_repeatedly(EVENT_FLUSH_S, self._flush, c)

    def stop(self, c):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._flush(c)

    shutdown = stop

    @staticmethod
    def _flush(c) -> None:
        if c.event_dispatcher is not None:
            c.event_dispatcher.flush()


def consumes(instance, queue: str) -> bool:
    """Whether the worker `instance` takes messages from `queue`."""
    consume_from = instance.app.amqp.queues.consume_from
    return consume_from is not None and queue in consume_from


@signals.celeryd_after_setup.connect
def _evaluate_workers_take_preflights(instance=None, **_kwargs) -> None:
    """A worker started with `-Q evaluate` also takes the pre-flight queue: Redis hands it the two
    queues in turn, so a pre-flight waits for one evaluation at most."""
    if consumes(instance, EVALUATE.queue):
        queues = instance.app.amqp.queues
        queues.select_add(queues[PREFLIGHT_QUEUE])  # the declared queue, with its own exchange


@signals.worker_init.connect
def _import_the_database_driver(**_kwargs) -> None:
    """Import the driver and create the engine object (no connection yet) before the pool forks:
    each child then inherits them instead of importing psycopg on its first task."""
    from db.session import engine_for

    engine_for(get_settings().sqlalchemy_url)


PR_SET_DUMPABLE = 4


@signals.worker_init.connect
@signals.worker_process_init.connect
def _hide_worker_environment(**_kwargs) -> None:
    """Make the worker's processes non-dumpable: their /proc/<pid>/environ (DATABASE_URL, REDIS_URL)
    then belongs to root, unreadable to a sandboxed candidate that runs under the worker's own uid."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


app = create_app()
