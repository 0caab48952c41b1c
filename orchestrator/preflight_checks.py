"""Pre-flight of a run's problems before the run exists: each reference alone, once, in the sandbox on
the chosen device (workers/evaluation/preflight.py), in parallel, with the verdicts cached per
problem source, device fingerprint and limits, so a problem that cannot run is refused before any
generation is paid for. Also the limits the run's evaluations get,
derived from the host and from what pre-flight measured.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from orchestrator.problems import ProblemSpec
from workers.evaluation import EvalSettings
from workers.evaluation.fingerprint import device_fingerprint, fingerprint_key
from workers.evaluation.preflight import ProblemCheck, preflight

MIN_MEMORY_LIMIT_MB = 4096
# A candidate computes what the reference computes, often with buffers of its own: its cap is this
# many times the reference's measured peak at least.
PEAK_FACTOR = 2.0
# A candidate's batch may take this many times what the reference's takes (a batch lasts about
# timing_batch_ms, or one call where a call takes longer) before it counts as hung.
SLOWDOWN_FACTOR = 20.0
# What a verdict depends on besides the source and the device.
LIMIT_FIELDS = ("memory_limit_mb", "run_timeout_s", "compile_timeout_s", "cpu_threads", "tmp_mb")


@dataclass(frozen=True)
class CheckedProblem:
    problem: ProblemSpec
    check: ProblemCheck
    cached: bool

    def row(self) -> dict:
        return {"problem": self.problem.key, "origin": self.problem.origin, **asdict(self.check), "cached": self.cached}


def parallel_evaluations(device: str) -> int:
    """How many evaluations a host runs at once: one per GPU on CUDA, one per core on the CPU."""
    if device == "cuda":
        import torch

        return max(1, torch.cuda.device_count())
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


def cache_key(problem: ProblemSpec, settings: EvalSettings) -> str:
    material = {"source": problem.source_hash, "device": settings.device, "fingerprint": fingerprint_key(device_fingerprint(settings.device)),
                **{name: getattr(settings, name) for name in LIMIT_FIELDS}}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:32]


def _cached(path: Path) -> ProblemCheck | None:
    try:
        return ProblemCheck(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None  # absent, or written by another version: checked again


def _store(path: Path, check: ProblemCheck) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(check.as_dict()))
    os.replace(partial, path)


def check_problems(problems: list[ProblemSpec], settings: EvalSettings, cache_dir: Path,
                   on_done: Callable[[CheckedProblem], None] = lambda _c: None) -> list[CheckedProblem]:
    """Every problem's pre-flight verdict, in the order given. Verdicts that would not change on
    another try (a pass, a missing module, a memory cap) are cached; a transient fault is not."""
    def one(problem: ProblemSpec) -> CheckedProblem:
        path = cache_dir / "preflight" / f"{cache_key(problem, settings)}.json"
        found = _cached(path)
        if found is not None:
            checked = CheckedProblem(problem, found, cached=True)
        else:
            checked = CheckedProblem(problem, preflight(problem.source, settings), cached=False)
            if not checked.check.transient:
                _store(path, checked.check)
        on_done(checked)
        return checked

    # Each check runs in a sandboxed child process of its own; the pool's threads only start and
    # wait on them, so threads give as many processes at once as the host runs evaluations.
    with ThreadPoolExecutor(max_workers=max(1, min(len(problems), parallel_evaluations(settings.device)))) as pool:
        return list(pool.map(one, problems))
