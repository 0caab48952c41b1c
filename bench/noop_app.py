"""The raw Celery anchor of bench_orchestration.py: a task that does nothing, on the same Redis,
with kturn's delivery settings (acks after the task, prefetch 1, no results) and no task events."""
from __future__ import annotations

import os

from celery import Celery

app = Celery("noop", broker=os.environ["REDIS_URL"])
app.conf.update(task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1, task_ignore_result=True,
                task_default_queue="noop", worker_hijack_root_logger=False)


@app.task(name="noop")
def noop(_index: int) -> None:
    return None
