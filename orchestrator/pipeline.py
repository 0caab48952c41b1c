"""How a stage runs a turn: claim, load what it needs, work outside any transaction, store, move on.

The stage tasks (`workers/*/tasks.py`) supply only the work; everything about the state machine
lives here and in `db/turns.py`.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import takewhile
from functools import lru_cache
from typing import Any

from sqlalchemy.exc import OperationalError

from db import runs as run_queries
from db import turns as turn_queries
from db.models import TrajectoryStatus, TurnState, utcnow
from db.session import session_scope, statement_scope, transaction_scope
from orchestrator import process_identity
from orchestrator.heartbeat import keep_leased
from orchestrator.problems import ProblemSpec
from orchestrator.prompts import PastTurn
from orchestrator.queues import enqueue
from orchestrator.rewards import discounted_returns
from orchestrator.run_config import RunConfig, StoredRunConfig
from orchestrator.settings import get_settings
from orchestrator.stages import BUILD, BY_WAITING_STATE, BY_WORKING_STATE, CLEAN, EVALUATE, GENERATE, STAGES, Stage

log = logging.getLogger("kturn.pipeline")

STAGE_TIMESTAMP = {GENERATE.name: "generated_at", CLEAN.name: "cleaned_at", BUILD.name: "built_at", EVALUATE.name: "evaluated_at"}
NEXT_STAGE = {GENERATE.name: CLEAN, CLEAN.name: BUILD, BUILD.name: EVALUATE}


@dataclass(frozen=True)
class TurnContext:
    turn_id: int
    turn_index: int
    trajectory_id: int
    run_id: int
    sample_index: int
    config: RunConfig
    problem: ProblemSpec
    history: list[PastTurn]
    earlier_rewards: list[float]
    raw_response: str | None
    finish_reason: dict[str, Any] | None
    code: str | None
    degenerate: bool | None
    no_code_reason: str | None
    has_builds: bool  # the build stage published builds for this turn


@dataclass
class Outcome:
    """What a stage's work produced: the columns to store, or why the turn failed."""

    values: dict[str, Any] = field(default_factory=dict)
    failure: str | None = None
    reward: float | None = None
    # Rows of other tables that belong with this result (a turn's token ids), written in the same
    # transaction once the turn's own store has succeeded: called with (session, turn id).
    also_store: Callable[[Any, int], None] | None = None
    # The last stage this result completes, where the stages after the one that ran have nothing to
    # do (the clean stage completes the build for an answer with nothing to build ahead, and the
    # evaluation too for an answer with no code): the turn skips their tasks. None: the stage itself.
    through: Stage | None = None


Work = Callable[[TurnContext], Outcome]


@lru_cache(maxsize=64)
def _parsed_config(config_json: str) -> StoredRunConfig:
    """A run's config never changes once stored (nor its text), and validating it is most of a
    stage's own CPU."""
    return StoredRunConfig.model_validate_json(config_json)


def load_context(claim: turn_queries.Claim, turn: dict[str, Any], rows: list[dict[str, Any]]) -> TurnContext:
    """What a stage works from: its turn's columns and the context rows its claim returned."""
    first = rows[0]
    earlier = [row for row in rows if row["earlier_index"] is not None]
    return TurnContext(
        turn_id=claim.turn_id,
        turn_index=turn["turn_index"],
        trajectory_id=claim.trajectory_id,
        run_id=first["run_id"],
        sample_index=first["sample_index"],
        config=_parsed_config(first["config"]),
        problem=ProblemSpec(name=first["name"], level=first["level"], source=first["source"], origin=first["origin"] or "", prompt=first["prompt"]),
        history=[PastTurn(answer=row["earlier_answer"] or "", feedback=row["earlier_feedback"] or "") for row in earlier],
        earlier_rewards=[row["earlier_reward"] or 0.0 for row in earlier],
        raw_response=turn["raw_response"],
        finish_reason=turn["finish_reason"],
        code=turn["code"],
        degenerate=turn["degenerate"],
        no_code_reason=turn["no_code_reason"],
        has_builds=bool(turn["has_builds"]),
    )


class StageRetry(Exception):
    """Raised by a stage's work when the failure is not the model's (a harness fault, a reference
    that timed out on a loaded host): the turn goes back to its queue instead of being scored."""


# Not the model's doing and likely to pass: the turn is handed back and tried again.
RETRYABLE = (StageRetry, OperationalError, OSError)

# Seconds a worker waits before it takes its next message, by how many claims in a row found its
# database unreachable: the message itself goes back on its queue at once, for a worker whose
# database answers, so a worker pointed at a dead database slows itself, not the turns.
CLAIM_BACKOFF_S = (0.25, 0.5, 1.0, 2.0, 4.0)


class _ClaimBackoff:
    failures = 0  # consecutive failed claims in this process

    @classmethod
    def wait(cls) -> None:
        delay = CLAIM_BACKOFF_S[min(cls.failures, len(CLAIM_BACKOFF_S) - 1)]
        cls.failures += 1  # shared by a threads pool's threads: it only sets how long they pause
        log.warning("this worker waits %g s before its next message", delay)
        time.sleep(delay)


def run_stage(stage: Stage, turn_id: int, work: Work) -> None:
    settings = get_settings()
    url = settings.sqlalchemy_url
    claimed = _claim(stage, turn_id, url, settings.lease_seconds)
    if claimed is None:
        with statement_scope(url) as db:
            held = turn_queries.held_claim(db, turn_id)
        if not hand_on_from_ended_holders(held):
            log.info("turn %s: not waiting for %s (a duplicate or late delivery); nothing to do", turn_id, stage.name)
        return
    claim, turn, rows = claimed
    try:
        context = load_context(claim, turn, rows)
    except Exception as error:  # claimed, so this counts as an attempt: a run it cannot read ends failed
        log.exception("turn %s: loading it for %s failed", turn_id, stage.name)
        retry_or_fail(stage, claim, f"loading the turn failed: {type(error).__name__}: {error}")
        return
    try:
        with keep_leased(url, claim, settings.lease_seconds):
            outcome = _guarded(stage, work, context)
    except RETRYABLE as error:
        retry_or_fail(stage, claim, f"{type(error).__name__}: {error}")
        return
    for next_stage, next_turn in _store_once_more_if_cut(url, stage, claim, context, outcome):
        enqueue(next_stage, next_turn)


def _store_once_more_if_cut(url: str, stage: Stage, claim: turn_queries.Claim, context: TurnContext,
                            outcome: Outcome) -> list[tuple[Stage, int]]:
    """The store, tried once more on a fresh connection if the first one was cut. A cut can come
    after the commit, so the second try may find the turn already moved on: then whatever waits in
    the trajectory from this turn on is enqueued (one more message is harmless; a missing one waits
    for the reconciler)."""
    try:
        return _store(url, stage, claim, context, outcome)
    except OperationalError as error:
        log.warning("turn %s: storing its %s result failed, trying once more: %s", claim.turn_id, stage.name, error)
    follow_ups = _store(url, stage, claim, context, outcome)
    if follow_ups:
        return follow_ups
    with statement_scope(url) as db:
        waiting = turn_queries.waiting_in_trajectory(db, context.trajectory_id, context.turn_index)
    return [(BY_WAITING_STATE[state], turn_id) for turn_id, state in waiting]


def _claim(stage: Stage, turn_id: int, url: str, lease_seconds: float) -> tuple[turn_queries.Claim, dict[str, Any], list[dict[str, Any]]] | None:
    """Claim the turn and read its context (None: not waiting for this stage). If the database stays
    away, the message goes back on its queue (nothing was claimed that a lease could bring back),
    this worker backs off, and the error is raised for Flower to show."""
    def claim():
        with statement_scope(url) as db:
            return turn_queries.claim_with_context(db, turn_id, stage.waiting, stage.working, process_identity.this_process(), lease_seconds)

    try:
        try:
            claimed = claim()
        except OperationalError:  # a connection cut under the pool (a terminated backend) is replaced at once
            claimed = claim()
    except OperationalError as error:
        enqueue(stage, turn_id)
        log.warning("turn %s: claiming for %s failed, so its message is back on the queue: %s", turn_id, stage.name, error)
        _ClaimBackoff.wait()  # the original message is acknowledged after: a copy for now (one more delivery is harmless)
        raise
    _ClaimBackoff.failures = 0
    return claimed


def _completed(stage: Stage, outcome: Outcome) -> tuple[Stage, dict[str, Any]]:
    """The last stage the outcome completes, and the turn's columns: the outcome's values and the
    timestamp of each stage completed."""
    last = outcome.through or stage
    now = utcnow()
    passed = STAGES[STAGES.index(stage):STAGES.index(last) + 1]
    return last, {**{STAGE_TIMESTAMP[s.name]: now for s in passed}, **outcome.values}


def _store(url: str, stage: Stage, claim: turn_queries.Claim, context: TurnContext, outcome: Outcome) -> list[tuple[Stage, int]]:
    """Store the outcome and decide what follows, in one transaction. Returns what to enqueue."""
    last, done = _completed(stage, outcome)
    if outcome.failure is None and last is not EVALUATE and outcome.also_store is None:
        with statement_scope(url) as db:  # a single statement: no transaction around it
            stored = turn_queries.store(db, claim, last.done, **done)
        return [(NEXT_STAGE[last.name], claim.turn_id)] if stored else _dropped(claim, stage)
    if outcome.failure is None and last is EVALUATE and outcome.also_store is None:
        if _continues(context, outcome.reward or 0.0):
            with statement_scope(url) as db:
                stored, _status, next_turn = turn_queries.store_done(db, claim, context.trajectory_id, context.turn_index + 1, **done)
            if not stored:
                return _dropped(claim, stage)
            return [] if next_turn is None else [(GENERATE, next_turn)]  # None: cancelled meanwhile, nothing follows
        with transaction_scope(url) as connection:  # the last turn: the trajectory (and the run) end in the same transaction
            stored, ended = turn_queries.store_last(connection, claim, context.trajectory_id, _returns(context, outcome.reward or 0.0), **done)
            if not stored:
                return _dropped(claim, stage)
            if ended:
                _complete_run(connection, context.run_id)
            return []
    with session_scope(url) as session:
        status, _run_id = turn_queries.lock_trajectory(session, context.trajectory_id)  # before the turn row: see lock_trajectory
        if outcome.failure is not None:
            if turn_queries.store(session, claim, TurnState.failed, error=outcome.failure, **outcome.values):
                fail_trajectory(session, context.trajectory_id, context.run_id)
            return []
        if not turn_queries.store(session, claim, last.done, **done):
            return _dropped(claim, stage)
        if outcome.also_store is not None:
            outcome.also_store(session, claim.turn_id)
        if last is not EVALUATE:
            return [(NEXT_STAGE[last.name], claim.turn_id)]
        if status != TrajectoryStatus.running.value:  # cancelled meanwhile: nothing follows
            return []
        return _advance(session, context, outcome.reward or 0.0)


def _dropped(claim: turn_queries.Claim, stage: Stage) -> list[tuple[Stage, int]]:
    log.warning("turn %s: claim for %s was handed on before the work finished; result dropped", claim.turn_id, stage.name)
    return []


def retry_or_fail(stage: Stage, claim: turn_queries.Claim, reason: str, lease_expired: bool = False) -> str | None:
    """Hand the turn back to its queue ("requeued"), or fail it once its stage has been tried
    max_attempts times ("failed"); None when the claim no longer holds the turn. With
    `lease_expired` (the reconciler, acting for a worker it believes dead) either happens only if
    the lease has run out at that moment: a lease renewed after the reconciler looked stays put."""
    settings = get_settings()
    with session_scope(settings.sqlalchemy_url) as session:
        _status, run_id = turn_queries.lock_trajectory(session, claim.trajectory_id)
        if claim.stage_attempt >= settings.max_attempts:
            error = f"{stage.name} failed {claim.stage_attempt} times; last: {reason}"[:2000]
            if not turn_queries.store(session, claim, TurnState.failed, lease_expired=lease_expired, error=error):
                return None
            fail_trajectory(session, claim.trajectory_id, run_id)
            log.error("turn %s: %s", claim.turn_id, error)
            return "failed"
        if not turn_queries.release_claim(session, claim, stage.waiting, lease_expired=lease_expired):
            return None
    log.warning("turn %s: %s will be tried again (%s)", claim.turn_id, stage.name, reason)
    enqueue(stage, claim.turn_id)
    return "requeued"


def hand_on_from_ended_holders(held: list[tuple[turn_queries.Claim, str | None]]) -> list[tuple[str, int, str]]:
    """Hand on (or fail, past max_attempts) each turn whose holder was a process of this machine
    that has ended: a redelivered message or the reconciler finds it long before its lease runs
    out. (stage name, turn id, "requeued" | "failed") of each one handed on."""
    handed = []
    for claim, holder in held:
        if process_identity.is_gone(holder):
            stage = BY_WORKING_STATE[claim.working.value]
            outcome = retry_or_fail(stage, claim, f"its worker process ended ({holder})")
            if outcome is not None:
                handed.append((stage.name, claim.turn_id, outcome))
    return handed


def _guarded(stage: Stage, work: Work, context: TurnContext) -> Outcome:
    """The stage cores turn whatever a model wrote into an outcome; any other exception is a bug in
    kturn, so the turn fails with the error on record instead of going round the queue forever."""
    try:
        return work(context)
    except RETRYABLE:
        raise
    except Exception as error:
        log.exception("turn %s: %s raised", context.turn_id, stage.name)
        return Outcome(failure=f"internal error in {stage.name}: {type(error).__name__}: {error}"[:2000])


def _advance(db, context: TurnContext, reward: float) -> list[tuple[Stage, int]]:
    """After an evaluation: the next turn (pending, to generate), or the end of the trajectory."""
    if _continues(context, reward):
        return [(GENERATE, turn_queries.add_next(db, context.trajectory_id, context.turn_index + 1))]
    end_trajectory(db, context.trajectory_id, context.run_id, TrajectoryStatus.completed, _returns(context, reward))
    return []


def _returns(context: TurnContext, reward: float) -> list[float]:
    """The discounted return of each turn of a trajectory that ends with this turn's `reward`."""
    return discounted_returns(context.earlier_rewards + [reward], context.config.gamma)


def fail_trajectory(db, trajectory_id: int, run_id: int) -> None:
    """End a trajectory as failed; the turns scored before the failure keep a return, discounted
    over that scored prefix (what a trainer can still use), while the trajectory has none."""
    turns, config = turn_queries.rewards_and_config(db, trajectory_id)
    scored = [reward for _, reward in takewhile(lambda t: t[0] == TurnState.done.value and t[1] is not None, turns)]
    gamma = config.get("gamma", RunConfig.model_fields["gamma"].default)
    returns = discounted_returns(scored, gamma) if scored else None
    end_trajectory(db, trajectory_id, run_id, TrajectoryStatus.failed, returns)


def _continues(context: TurnContext, reward: float) -> bool:
    """Whether the trajectory goes on to another turn after this evaluation."""
    config = context.config
    early_stop = config.early_stop_reward is not None and reward >= config.early_stop_reward
    return context.turn_index + 1 < config.max_turns and not early_stop


def end_trajectory(db, trajectory_id: int, run_id: int, status: TrajectoryStatus, returns: list[float] | None) -> None:
    if turn_queries.finish_trajectory(db, trajectory_id, status, returns):
        _complete_run(db, run_id)


def _complete_run(db, run_id: int) -> None:
    if run_queries.complete_if_finished(db, run_id):
        log.info("run %s completed", run_id)
