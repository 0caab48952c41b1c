"""The limits a run's evaluations get: derived from the host (memory per evaluation child) and
raised to fit what pre-flight measured (each reference's peak memory and forward() time). Light
to import: `kturn run --help` shows these defaults."""
from __future__ import annotations

import math
import os
import shutil
import subprocess
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.preflight_checks import CheckedProblem

MIN_MEMORY_LIMIT_MB = 4096
# A candidate computes what the reference computes, often with buffers of its own: its cap is this
# many times the reference's measured peak at least.
PEAK_FACTOR = 2.0
# A candidate's batch may take this many times what the reference's takes (a batch lasts about
# timing_batch_ms, or one call where a call takes longer) before it counts as hung.
SLOWDOWN_FACTOR = 20.0


@lru_cache(maxsize=1)
def listed_gpus() -> tuple[str, ...]:
    """The indexes of the GPUs nvidia-smi lists on this host (it ignores CUDA_VISIBLE_DEVICES); none without it."""
    if not shutil.which("nvidia-smi"):
        return ()
    try:
        found = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                               text=True, timeout=30).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(g for g in found if g.isdigit())


def gpus_in(variable: str) -> list[str]:
    """The GPUs an environment variable lists, comma-separated (KTURN_GPUS="0,1,2,3", CUDA_VISIBLE_DEVICES)."""
    return [g.strip() for g in os.environ.get(variable, "").split(",") if g.strip()]


def parallel_evaluations(device: str) -> int:
    """How many evaluations a host runs at once: one per GPU on CUDA (KTURN_GPUS, else every GPU
    nvidia-smi lists, else torch's count: not CUDA_VISIBLE_DEVICES, which a pool process pinned to
    one GPU sees narrowed to it while it shares the host with the others), one per core on the CPU."""
    if device == "cuda":
        gpus = len(gpus_in("KTURN_GPUS")) or len(listed_gpus())
        if not gpus:
            import torch

            gpus = torch.cuda.device_count()
        return max(1, gpus)
    return os.cpu_count() or 1


def host_memory_mb() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") >> 20


def default_memory_limit_mb(device: str) -> int:
    """Each of an evaluation's two children (reference, candidate) gets an equal share of the host's
    memory among the evaluations it runs at once, and never less than 4 GiB."""
    return max(MIN_MEMORY_LIMIT_MB, host_memory_mb() // (2 * parallel_evaluations(device)))


def memory_limit_for(checked: list[CheckedProblem], floor_mb: int) -> int:
    """`floor_mb`, raised to PEAK_FACTOR times the largest peak a reference was measured at."""
    peaks = [c.check.peak_memory_mb for c in checked if c.check.ok and c.check.peak_memory_mb]
    return max(floor_mb, math.ceil(PEAK_FACTOR * max(peaks))) if peaks else floor_mb


def run_timeout_for(checked: list[CheckedProblem], floor_s: float, batch_ms: float) -> float:
    """`floor_s`, raised to SLOWDOWN_FACTOR times the longest batch a reference would take: a
    problem whose reference takes seconds per call gets a limit that fits it."""
    calls_ms = [c.check.forward_ms for c in checked if c.check.ok and c.check.forward_ms]
    if not calls_ms:
        return floor_s
    return max(floor_s, math.ceil(SLOWDOWN_FACTOR * max(batch_ms, max(calls_ms)) / 1e3))
