"""The embedded default's worker: the same Celery tasks, consumed in-process from Celery's
in-memory transport. Used when no REDIS_URL is set (`kturn demo`, `kturn run` on a laptop)."""
from __future__ import annotations

import logging
from collections.abc import Callable

from orchestrator.app import app
from orchestrator.stages import STAGES

log = logging.getLogger("kturn.embedded")

# Later stages first, so a trajectory runs to its end before new ones start.
DRAIN_ORDER = tuple(reversed(STAGES))


def run_until(finished: Callable[[], bool], on_task: Callable[[], None] = lambda: None) -> int:
    """Consume and run tasks until `finished()` or the queues are empty; returns the tasks run."""
    app.loader.import_default_modules()
    executed = 0
    with app.connection_for_read() as connection:
        queues = [connection.SimpleQueue(stage.queue) for stage in DRAIN_ORDER]
        try:
            while not finished():
                message = _next_message(queues)
                if message is None:
                    break
                _execute(message)
                executed += 1
                on_task()
        finally:
            for queue in queues:
                queue.close()
    return executed


def _next_message(queues):
    for queue in queues:
        try:
            return queue.get(block=False)
        except queue.Empty:
            continue
    return None


def _execute(message) -> None:
    task = app.tasks[message.headers["task"]]
    args, kwargs, _embed = message.decode()
    try:
        task(*args, **kwargs)
    except Exception:  # as a real worker does: log it and take the next task
        log.exception("task %s%r raised", task.name, tuple(args))
    finally:
        # acks_late, as in a real worker: acknowledged once the task has run, whatever its end.
        message.ack()
