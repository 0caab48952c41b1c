"""How a stage runs a turn: claim, load what it needs, work outside any transaction, store, move on.

The stage tasks (`workers/*/tasks.py`) supply only the work; everything about the state machine
lives here and in `db/turns.py`.
"""
from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import takewhile
from typing import Any

from sqlalchemy.exc import OperationalError

from db import runs as run_queries
from db import turns as turn_queries
from db.models import TrajectoryStatus, TurnState, utcnow
from db.session import session_scope
from orchestrator.heartbeat import LeaseHeartbeat
from orchestrator.problems import ProblemSpec
from orchestrator.prompts import PastTurn
from orchestrator.queues import enqueue
from orchestrator.rewards import discounted_returns
from orchestrator.run_config import RunConfig
from orchestrator.settings import get_settings
from orchestrator.stages import BUILD, CLEAN, EVALUATE, GENERATE, Stage

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


@dataclass
class Outcome:
    """What a stage's work produced: the columns to store, or why the turn failed."""

    values: dict[str, Any] = field(default_factory=dict)
    failure: str | None = None
    reward: float | None = None
    # Rows of other tables that belong with this result (a turn's token ids), written in the same
    # transaction once the turn's own store has succeeded: called with (session, turn id).
    also_store: Callable[[Any, int], None] | None = None


Work = Callable[[TurnContext], Outcome]


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def load_context(session, turn_id: int) -> TurnContext:
    turn = turn_queries.get(session, turn_id)
    trajectory = turn.trajectory
    problem = trajectory.problem
    earlier = turn_queries.history(session, trajectory.id, turn.turn_index)
    return TurnContext(
        turn_id=turn.id,
        turn_index=turn.turn_index,
        trajectory_id=trajectory.id,
        run_id=trajectory.run_id,
        sample_index=trajectory.sample_index,
        config=RunConfig.model_validate(trajectory.run.config),
        problem=ProblemSpec(name=problem.name, level=problem.level, source=problem.source, origin=problem.origin or "", prompt=problem.prompt),
        history=[PastTurn(answer=t.cleaned_response or "", feedback=t.feedback or "") for t in earlier],
        earlier_rewards=[t.reward or 0.0 for t in earlier],
        raw_response=turn.raw_response,
        finish_reason=turn.finish_reason,
        code=turn.code,
        degenerate=turn.degenerate,
        no_code_reason=turn.no_code_reason,
    )


class StageRetry(Exception):
    """Raised by a stage's work when the failure is not the model's (a harness fault, a reference
    that timed out on a loaded host): the turn goes back to its queue instead of being scored."""


# Not the model's doing and likely to pass: the turn is handed back and tried again.
RETRYABLE = (StageRetry, OperationalError, OSError)


def run_stage(stage: Stage, turn_id: int, work: Work) -> None:
    settings = get_settings()
    url = settings.sqlalchemy_url
    with session_scope(url) as session:
        claim = turn_queries.claim(session, turn_id, stage.waiting, stage.working, worker_name(), settings.lease_seconds)
        context = load_context(session, turn_id) if claim else None
    if claim is None:
        log.info("turn %s: not waiting for %s (a duplicate or late delivery); nothing to do", turn_id, stage.name)
        return
    try:
        with LeaseHeartbeat(url, claim, settings.lease_seconds):
            outcome = _guarded(stage, work, context)
    except RETRYABLE as error:
        retry_or_fail(stage, claim, context.trajectory_id, context.run_id, f"{type(error).__name__}: {error}")
        return
    with session_scope(url) as session:
        follow_up = _store(session, stage, claim, context, outcome)
    for next_stage, next_turn in follow_up:
        enqueue(next_stage, next_turn)


def _store(session, stage: Stage, claim: turn_queries.Claim, context: TurnContext, outcome: Outcome) -> list[tuple[Stage, int]]:
    """Store the outcome and decide what follows, in one transaction. Returns what to enqueue."""
    trajectory = turn_queries.lock_trajectory(session, context.trajectory_id)  # before the turn row: see lock_trajectory
    if outcome.failure is not None:
        if turn_queries.store(session, claim, TurnState.failed, error=outcome.failure, **outcome.values):
            fail_trajectory(session, context.trajectory_id, context.run_id)
        return []
    if not turn_queries.store(session, claim, stage.done, **{STAGE_TIMESTAMP[stage.name]: utcnow()}, **outcome.values):
        log.warning("turn %s: claim for %s was handed on before the work finished; result dropped", claim.turn_id, stage.name)
        return []
    if outcome.also_store is not None:
        outcome.also_store(session, claim.turn_id)
    if stage is not EVALUATE:
        return [(NEXT_STAGE[stage.name], claim.turn_id)]
    if trajectory.status != TrajectoryStatus.running.value:  # cancelled meanwhile: nothing follows
        return []
    return _advance(session, context, outcome.reward or 0.0)


def retry_or_fail(stage: Stage, claim: turn_queries.Claim, trajectory_id: int, run_id: int, reason: str) -> str | None:
    """Hand the turn back to its queue ("requeued"), or fail it once its stage has been tried
    max_attempts times ("failed"); None when the claim no longer holds the turn."""
    settings = get_settings()
    with session_scope(settings.sqlalchemy_url) as session:
        turn_queries.lock_trajectory(session, trajectory_id)
        if claim.stage_attempt >= settings.max_attempts:
            error = f"{stage.name} failed {claim.stage_attempt} times; last: {reason}"[:2000]
            if not turn_queries.store(session, claim, TurnState.failed, error=error):
                return None
            fail_trajectory(session, trajectory_id, run_id)
            log.error("turn %s: %s", claim.turn_id, error)
            return "failed"
        if not turn_queries.release_claim(session, claim, stage.waiting):
            return None
    log.warning("turn %s: %s will be tried again (%s)", claim.turn_id, stage.name, reason)
    enqueue(stage, claim.turn_id)
    return "requeued"


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


def _advance(session, context: TurnContext, reward: float) -> list[tuple[Stage, int]]:
    """After an evaluation: the next turn (pending, to generate), or the end of the trajectory."""
    config = context.config
    early_stop = config.early_stop_reward is not None and reward >= config.early_stop_reward
    if context.turn_index + 1 < config.max_turns and not early_stop:
        return [(GENERATE, turn_queries.add_next(session, context.trajectory_id, context.turn_index + 1))]
    rewards = context.earlier_rewards + [reward]
    returns = dict(enumerate(discounted_returns(rewards, config.gamma)))
    end_trajectory(session, context.trajectory_id, context.run_id, TrajectoryStatus.completed, returns)
    return []


def fail_trajectory(session, trajectory_id: int, run_id: int) -> None:
    """End a trajectory as failed; the turns scored before the failure keep a return, discounted
    over that scored prefix (what a trainer can still use), while the trajectory has none."""
    turns = turn_queries.history(session, trajectory_id, before_index=1 << 30)
    scored = [t.reward for t in takewhile(lambda t: t.state == TurnState.done.value and t.reward is not None, turns)]
    gamma = turn_queries.lock_trajectory(session, trajectory_id).run.config.get("gamma", RunConfig.model_fields["gamma"].default)
    returns = dict(enumerate(discounted_returns(scored, gamma))) if scored else None
    end_trajectory(session, trajectory_id, run_id, TrajectoryStatus.failed, returns)


def end_trajectory(session, trajectory_id: int, run_id: int, status: TrajectoryStatus, returns: dict[int, float] | None) -> None:
    if turn_queries.finish_trajectory(session, trajectory_id, status, returns) and run_queries.complete_if_finished(session, run_id):
        log.info("run %s completed", run_id)
