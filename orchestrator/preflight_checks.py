"""Pre-flight of a run's problems before the run exists: each reference alone, once, in the sandbox on
the chosen device (workers/evaluation/preflight.py), in parallel, with the verdicts cached per
problem source, device fingerprint and limits, so a problem that cannot run is refused before any
generation is paid for. The limits derived from what it measured are in
orchestrator/limits.py.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from orchestrator.limits import parallel_evaluations
from orchestrator.problems import ProblemSpec
from workers.evaluation import EvalSettings
from workers.evaluation.fingerprint import device_fingerprint, fingerprint_key
from workers.evaluation.preflight import ProblemCheck, preflight

# What a verdict depends on besides the source and the device.
LIMIT_FIELDS = ("memory_limit_mb", "run_timeout_s", "compile_timeout_s", "cpu_threads", "tmp_mb")


@dataclass(frozen=True)
class CheckedProblem:
    problem: ProblemSpec
    check: ProblemCheck
    cached: bool

    def row(self) -> dict:
        return {"problem": self.problem.key, "origin": self.problem.origin, **asdict(self.check), "cached": self.cached}


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
