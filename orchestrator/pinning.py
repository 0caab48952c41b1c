"""A device of its own per worker process, Celery-style: `celery -A orchestrator.app worker -Q evaluate
-c N` pins pool process i (billiard's process index, reused when a process is replaced)

- to GPU i on a host with N GPUs (CUDA_VISIBLE_DEVICES), so N evaluations run side by side without
  sharing a device. The GPUs are KTURN_GPUS (e.g. "0,1,2,3"), else those in CUDA_VISIBLE_DEVICES,
  else every GPU nvidia-smi lists; with fewer than two there is nothing to do;
- to cores of its own, an equal share of those the worker may use, so two evaluations never
  share a core (they would slow each other's timed batches at random). The sandbox pins each
  evaluation's children within that share. Only the processes of workers that evaluate (or run
  pre-flights) are pinned to cores: the other stages time nothing, and a generate or clean process
  held to one core would wait there while another core idles."""
from __future__ import annotations

import os

from celery import signals

from orchestrator.limits import gpus_in, listed_gpus
from orchestrator.stages import EVALUATE, PREFLIGHT_QUEUE

_worker = None  # the WorkController of this worker, whose concurrency is known once its pool starts


def available_gpus() -> list[str]:
    return gpus_in("KTURN_GPUS") or gpus_in("CUDA_VISIBLE_DEVICES") or list(listed_gpus())


def gpu_for(process_index: int, gpus: list[str]) -> str | None:
    """The GPU of pool process `process_index` (0-based), or None when there is no choice to make."""
    return gpus[process_index % len(gpus)] if len(gpus) > 1 else None


def cores_for(process_index: int, processes: int, cores: list[int]) -> list[int]:
    """The cores of pool process `process_index` of `processes`: a contiguous equal share of
    `cores` (one each, in turn, when there are more processes than cores)."""
    share = max(1, len(cores) // max(1, processes))
    start = process_index * share % len(cores)
    return cores[start:start + share]


def _evaluates(worker) -> bool:
    """Whether the worker runs evaluations or pre-flights (the references' timed batches)."""
    from orchestrator.app import consumes  # imported by the app: by the time a pool process starts, the app is

    return consumes(worker, EVALUATE.queue) or consumes(worker, PREFLIGHT_QUEUE)


@signals.celeryd_init.connect
def remember_worker(instance=None, **_kwargs) -> None:
    global _worker
    _worker = instance


@signals.worker_process_init.connect
def pin_process(**_kwargs) -> None:
    from billiard.process import current_process

    index = getattr(current_process(), "index", None)
    if not isinstance(index, int):
        return
    gpu = gpu_for(index, available_gpus())
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    processes = getattr(_worker, "concurrency", None)
    if isinstance(processes, int) and processes > 1 and _evaluates(_worker):
        os.sched_setaffinity(0, cores_for(index, processes, sorted(os.sched_getaffinity(0))))
