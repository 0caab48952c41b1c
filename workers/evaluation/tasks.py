"""Celery task of the evaluate stage: sandboxed evaluation, reward, feedback for the next turn."""
from __future__ import annotations

from db import baselines, builds
from db import preflight as preflight_requests
from db.session import session_scope
from orchestrator.app import app
from orchestrator.feedback import evaluation_feedback, no_code_verdict
from orchestrator.pipeline import Outcome, StageRetry, TurnContext, run_stage
from orchestrator.preflight_checks import check_for_worker
from orchestrator.rewards import verdict_reward
from orchestrator.settings import get_settings
from orchestrator.stages import EVALUATE, PREFLIGHT_TASK
from workers.evaluation import NOT_THE_CANDIDATES_FAULT, EvalResult, device_fingerprint, evaluate, fingerprint_key
from workers.evaluation.builds import CacheEntry, install_entry


# The harness or the reference failed: scoring the candidate 0 would put a wrong label in the data.


def record_baseline(problem_hash: str, device_key: str, result: EvalResult) -> None:
    """The reference's time, measured beside the candidate in this evaluation, kept per problem and device."""
    with session_scope(get_settings().sqlalchemy_url) as session:
        b = result.baseline
        baselines.put(session, problem_hash, device_key, b.median_ms, b.spread_ms, b.trials, result.fingerprint)


def baseline_key(settings) -> str:
    """Reference timings are comparable only on the same device and toolchain, under the same timing conditions."""
    conditions = {"cpu_threads": settings.cpu_threads, "warmup_runs": settings.warmup_runs, "timing_trials": settings.timing_trials}
    return fingerprint_key({**device_fingerprint(settings.device), "timing_conditions": conditions})


def install_prebuilt(turn_id: int, extensions_dir: str) -> None:
    """The builds the build stage made for this turn, into this host's cache, where the
    evaluation's builder finds them under their keys. One made with another toolchain has
    another key and is simply not found: the evaluation builds it here."""
    with session_scope(get_settings().sqlalchemy_url) as session:
        rows = builds.for_turn(session, turn_id)
    for key, meta, module in rows:
        install_entry(extensions_dir, CacheEntry(key, meta, module))


def evaluate_turn(context: TurnContext) -> Outcome:
    if context.code is None:  # cleaned before the clean stage scored such answers itself
        return Outcome(values=no_code_verdict(bool(context.degenerate), context.no_code_reason), reward=0.0)
    config = context.config
    settings = config.evaluation_settings()
    if context.has_builds:
        install_prebuilt(context.turn_id, settings.resolved_extensions_dir())
    result = evaluate(context.problem.source, context.code, settings)
    if result.error_kind == "reference_error" and not result.details.get("reference_transient"):
        # the problem itself cannot run here: never scored, never blamed on the model, not retried
        return Outcome(failure=f"reference_error: {result.error}")
    if result.error_kind in NOT_THE_CANDIDATES_FAULT:
        raise StageRetry(f"{result.error_kind}: {result.error}")
    if result.baseline is not None:
        record_baseline(context.problem.source_hash, baseline_key(settings), result)
    verdict = result.as_dict()
    reward = verdict_reward(verdict, config.rewards)
    return Outcome(
        values={
            "compiled": result.compiled,
            "correct": result.correct,
            "runtime_ms": result.runtime.median_ms if result.runtime else None,
            "baseline_ms": result.baseline.median_ms if result.baseline else None,
            "speedup": result.speedup,
            "flags": result.flags,
            "error_kind": result.error_kind,
            "error": result.error,
            "evaluation": verdict,
            "reward": reward,
            "feedback": evaluation_feedback(verdict, reward, config.prompt.max_feedback_chars),
        },
        reward=reward,
    )


@app.task(name=EVALUATE.task_name)
def evaluate_task(turn_id: int) -> None:
    run_stage(EVALUATE, turn_id, evaluate_turn)


@app.task(name=PREFLIGHT_TASK, bind=True)
def preflight_task(self, request_id: str) -> None:
    """Answer a pre-flight request (orchestrator/preflight_checks.py) with the verdict on this host;
    one its CLI stopped waiting for is gone, and one already answered stays as it is."""
    url = get_settings().sqlalchemy_url
    with session_scope(url) as session:
        request = preflight_requests.pending(session, request_id)
        asked = None if request is None else (request.settings, request.derive_memory_limit, request.source, request.source_hash)
    if asked is None:
        return
    verdict = check_for_worker(*asked, get_settings().cache_dir.expanduser())
    with session_scope(url) as session:
        preflight_requests.answer(session, request_id, verdict, self.request.hostname or "")
