"""Pre-flight of a run's problems before the run exists: each reference alone, once, in the sandbox on
the chosen device (workers/evaluation/preflight.py), in parallel, with the verdicts cached per
problem source, device fingerprint and limits, so a problem that cannot run is refused before any
generation is paid for. It runs here, or, where the device is on the evaluate workers' hosts and
not on this one, as tasks on their queue with the verdicts coming back through the database. The
limits derived from what it measured are in orchestrator/limits.py.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from pathlib import Path

from orchestrator.limits import default_memory_limit_mb, parallel_evaluations
from orchestrator.problems import ProblemSpec
from workers.evaluation import EvalSettings
from workers.evaluation.fingerprint import device_fingerprint, fingerprint_key
from workers.evaluation.preflight import ProblemCheck, preflight

# What a verdict depends on besides the source and the device.
LIMIT_FIELDS = ("memory_limit_mb", "run_timeout_s", "compile_timeout_s", "cpu_threads", "tmp_mb")
HERE = "here"
POLL_S = 0.5
ORPHANED_AFTER = timedelta(days=1)


class PreflightUnavailable(RuntimeError):
    """The evaluate workers cannot be asked, or stopped answering."""


@dataclass(frozen=True)
class CheckedProblem:
    problem: ProblemSpec
    check: ProblemCheck
    cached: bool
    memory_limit_mb: int  # the cap it ran under
    where: str = HERE     # or the name of the worker that ran it

    def row(self) -> dict:
        return {"problem": self.problem.key, "origin": self.problem.origin, **asdict(self.check), "cached": self.cached,
                "memory_limit_mb": self.memory_limit_mb, "where": self.where}


def cache_key(source_hash: str, settings: EvalSettings) -> str:
    material = {"source": source_hash, "device": settings.device, "fingerprint": fingerprint_key(device_fingerprint(settings.device)),
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


def check_source(source: str, source_hash: str, settings: EvalSettings, cache_dir: Path) -> tuple[ProblemCheck, bool]:
    """One reference's verdict on this host, and whether it came from the cache. Verdicts that
    would not change on another try (a pass, a missing module, a memory cap) are cached; a
    transient fault is not."""
    path = cache_dir / "preflight" / f"{cache_key(source_hash, settings)}.json"
    found = _cached(path)
    if found is not None:
        return found, True
    check = preflight(source, settings)
    if not check.transient:
        _store(path, check)
    return check, False


def check_problems(problems: list[ProblemSpec], settings: EvalSettings, cache_dir: Path,
                   on_done: Callable[[CheckedProblem], None] = lambda _c: None) -> list[CheckedProblem]:
    """Every problem's pre-flight verdict on this host, in the order given."""
    def one(problem: ProblemSpec) -> CheckedProblem:
        check, cached = check_source(problem.source, problem.source_hash, settings, cache_dir)
        checked = CheckedProblem(problem, check, cached, settings.memory_limit_mb)
        on_done(checked)
        return checked

    # Each check runs in a sandboxed child process of its own; the pool's threads only start and
    # wait on them, so threads give as many processes at once as the host runs evaluations.
    with ThreadPoolExecutor(max_workers=max(1, min(len(problems), checks_at_once(settings.device)))) as pool:
        return list(pool.map(one, problems))


def checks_at_once(device: str) -> int:
    """Pre-flights this host runs at once: as many as its evaluations on the CPU, one on CUDA. Every
    sandboxed child inherits this process's CUDA_VISIBLE_DEVICES, so two at once would share a GPU,
    and an out-of-memory error the other caused would be cached as the problem's own failure."""
    return 1 if device == "cuda" else parallel_evaluations(device)


def check_for_worker(request_settings: dict, derive_memory_limit: bool, source: str, source_hash: str, cache_dir: Path) -> dict:
    """What an evaluate worker answers a pre-flight request with: the verdict on its host, under
    the memory cap its host gives an evaluation child where the request leaves that to it."""
    memory_limit_mb = request_settings.get("memory_limit_mb")
    try:
        settings = EvalSettings(**request_settings)
        if derive_memory_limit:
            settings = replace(settings, memory_limit_mb=default_memory_limit_mb(settings.device))
        memory_limit_mb = settings.memory_limit_mb
        check, cached = check_source(source, source_hash, settings, cache_dir)
    except Exception as error:  # settings this version rejects, or the harness failed: say so, and let the CLI stop waiting
        check, cached = ProblemCheck(ok=False, error=f"the pre-flight failed on the worker: {error!r}", transient=True), False
    return {"check": check.as_dict(), "cached": cached, "memory_limit_mb": memory_limit_mb}


def check_on_workers(problems: list[ProblemSpec], settings: EvalSettings, derive_memory_limit: bool, database_url: str,
                     on_done: Callable[[CheckedProblem], None] = lambda _c: None) -> list[CheckedProblem]:
    """Every problem's pre-flight verdict from the evaluate workers, in the order given: each
    request is a row, its message carries only the row's id, and the worker writes the verdict
    into the row. The rows are deleted once read (or given up on)."""
    from db import preflight as requests
    from db.session import session_scope
    from orchestrator.queues import send_many
    from orchestrator.stages import PREFLIGHT_QUEUE, PREFLIGHT_TASK

    _need_evaluate_workers()
    ids = {str(uuid.uuid4()): problem for problem in problems}
    with session_scope(database_url) as session:
        requests.forget_older_than(session, ORPHANED_AFTER)  # a CLI killed while it waited left them
        requests.ask(session, [{"id": request_id, "source": p.source, "source_hash": p.source_hash, "settings": asdict(settings),
                                "derive_memory_limit": derive_memory_limit} for request_id, p in ids.items()])
    try:
        send_many(PREFLIGHT_TASK, PREFLIGHT_QUEUE, ids)
        return _collect(ids, database_url, _patience_s(settings), on_done)
    finally:
        with session_scope(database_url) as session:
            requests.forget(session, ids)


# Times the workers are asked which queues they take, each waiting WORKER_REPLY_S for replies: the
# main process of a worker on a loaded host can answer after one window, and only a check that finds
# none waits more.
WORKER_ASKS, WORKER_REPLY_S = 3, 2.0


def _need_evaluate_workers() -> None:
    from orchestrator.app import app
    from orchestrator.stages import EVALUATE, PREFLIGHT_QUEUE

    for _ in range(WORKER_ASKS):
        answers = app.control.inspect(timeout=WORKER_REPLY_S).active_queues() or {}
        if any(queue["name"] == PREFLIGHT_QUEUE for queues in answers.values() for queue in queues):
            return
    raise PreflightUnavailable(f"pre-flight on the evaluate workers needs one running, and no worker taking the `{PREFLIGHT_QUEUE}` "
                               f"queue (every `-Q {EVALUATE.queue}` worker of this version does) answered in {WORKER_ASKS * WORKER_REPLY_S:g} s: "
                               "start them first (kturn run also takes --no-check)")


def _patience_s(settings: EvalSettings) -> float:
    """How long to wait for the next verdict: a busy worker finishes its evaluation first (one: it
    takes its queues in turn), then runs the check."""
    return settings.evaluation_timeout_s + settings.compile_timeout_s + 2 * settings.run_timeout_s


def _collect(ids: dict[str, ProblemSpec], database_url: str, patience_s: float,
             on_done: Callable[[CheckedProblem], None]) -> list[CheckedProblem]:
    from db import preflight as requests
    from db.session import session_scope

    done: dict[str, CheckedProblem] = {}
    last_answer = time.monotonic()
    while len(done) < len(ids):
        time.sleep(POLL_S)
        with session_scope(database_url) as session:
            found = requests.answered(session, [request_id for request_id in ids if request_id not in done])
        for request_id, (verdict, worker) in found.items():
            done[request_id] = CheckedProblem(ids[request_id], ProblemCheck(**verdict["check"]), verdict["cached"],
                                              verdict["memory_limit_mb"], worker)
            on_done(done[request_id])
        if found:
            last_answer = time.monotonic()
        elif time.monotonic() - last_answer > patience_s:
            raise PreflightUnavailable(f"the evaluate workers answered {len(done)} of {len(ids)} pre-flight requests and then "
                                       f"nothing for {patience_s:.0f} s: see their logs (kturn run also takes --no-check)")
    return [done[request_id] for request_id in ids]
