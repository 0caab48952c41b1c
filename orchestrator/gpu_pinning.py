"""One GPU per worker process, Celery-style: `celery -A orchestrator.app worker -Q evaluate -c N` on
a host with N GPUs pins pool process i to GPU i (CUDA_VISIBLE_DEVICES), so N evaluations run side
by side without sharing a device. The GPUs are KTURN_GPUS (e.g. "0,1,2,3"), else those in
CUDA_VISIBLE_DEVICES, else every GPU nvidia-smi lists; with fewer than two there is nothing to do."""
from __future__ import annotations

import os
import shutil
import subprocess

from celery import signals


def available_gpus() -> list[str]:
    for name in ("KTURN_GPUS", "CUDA_VISIBLE_DEVICES"):
        listed = [g.strip() for g in os.environ.get(name, "").split(",") if g.strip()]
        if listed:
            return listed
    if not shutil.which("nvidia-smi"):
        return []
    try:
        found = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                               text=True, timeout=30).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return []
    return [g for g in found if g.isdigit()]


def gpu_for(process_index: int, gpus: list[str]) -> str | None:
    """The GPU of pool process `process_index` (0-based), or None when there is no choice to make."""
    return gpus[process_index % len(gpus)] if len(gpus) > 1 else None


@signals.worker_process_init.connect
def pin_gpu(**_kwargs) -> None:
    from billiard.process import current_process

    index = getattr(current_process(), "index", None)
    gpu = gpu_for(index, available_gpus()) if isinstance(index, int) else None
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
