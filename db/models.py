"""SQLAlchemy 2 models. Table and column names are a public contract: users query them with SQL."""
from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint, column, literal_column
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from db.token_arrays import TokenArray

JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSONType, list[Any]: JSONType, datetime: DateTime(timezone=True)}


class RunStatus(str, enum.Enum):
    running = "running"
    completed = "completed"
    # Every trajectory ended, some of them failed (`kturn retry RUN` revives those).
    completed_with_failures = "completed_with_failures"
    cancelled = "cancelled"


class TrajectoryStatus(str, enum.Enum):
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


class TurnState(str, enum.Enum):
    """The turn state machine. Each stage claims a turn by moving it from its waiting state to its
    working state with a conditional update; `done`, `failed` and `cancelled` are final."""

    pending = "pending"          # waits for generation
    generating = "generating"
    generated = "generated"      # waits for cleaning
    cleaning = "cleaning"
    cleaned = "cleaned"          # waits for its build
    building = "building"
    built = "built"              # waits for evaluation
    evaluating = "evaluating"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"


FINAL_TURN_STATES = (TurnState.done, TurnState.failed, TurnState.cancelled)
WAITING_TURN_STATES = (TurnState.pending, TurnState.generated, TurnState.cleaned, TurnState.built)
WORKING_TURN_STATES = (TurnState.generating, TurnState.cleaning, TurnState.building, TurnState.evaluating)


def in_states(state_column, states: tuple[TurnState, ...]):
    """`state IN (...)` with the states written out, not bound: the partial indexes of `turns` are
    defined by this condition, and SQLite takes a partial index only for a query whose condition
    has its very terms (bound values never match, nor would a Postgres plan made for any values)."""
    return state_column.in_([literal_column(f"'{state.value}'") for state in states])


_WORKING = in_states(column("state"), WORKING_TURN_STATES)  # the partial indexes' predicates
_WAITING = in_states(column("state"), WAITING_TURN_STATES)


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(32), default=RunStatus.running.value, index=True)
    config: Mapped[dict[str, Any]]

    trajectories: Mapped[list[Trajectory]] = relationship(back_populates="run", order_by="Trajectory.id")


class Problem(Base):
    __tablename__ = "problems"
    __table_args__ = (UniqueConstraint("name", "source_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), index=True)
    level: Mapped[int | None]
    source: Mapped[str] = mapped_column(Text)
    source_hash: Mapped[str] = mapped_column(String(64), index=True)
    origin: Mapped[str | None] = mapped_column(Text)  # the file or JSONL line it was loaded from
    # `level{L}/{id}`: the same from a KernelBench directory and from a slime JSONL line (NULL when
    # the source gives no level or id); the ids the source itself gave.
    problem_key: Mapped[str | None] = mapped_column(String(255), index=True)
    kernelbench_id: Mapped[int | None]
    instance_id: Mapped[str | None] = mapped_column(String(255))
    prompt: Mapped[list[Any] | None]  # a dataset's own turn-0 prompt (chat messages), when it has one
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Trajectory(Base):
    __tablename__ = "trajectories"
    __table_args__ = (UniqueConstraint("run_id", "problem_id", "sample_index"), Index("ix_trajectories_run_status", "run_id", "status"))

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    problem_id: Mapped[int] = mapped_column(ForeignKey("problems.id"))
    sample_index: Mapped[int]
    status: Mapped[str] = mapped_column(String(16), default=TrajectoryStatus.running.value)
    return_: Mapped[float | None] = mapped_column("return", Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]

    run: Mapped[Run] = relationship(back_populates="trajectories")
    problem: Mapped[Problem] = relationship()
    turns: Mapped[list[Turn]] = relationship(back_populates="trajectory", order_by="Turn.turn_index")


class Turn(Base):
    __tablename__ = "turns"
    __table_args__ = (
        UniqueConstraint("trajectory_id", "turn_index"),
        # The reconciler's: partial, so that a stage's lookup by id never takes them (migration 0010).
        Index("ix_turns_working_lease", "lease_expires_at", postgresql_where=_WORKING, sqlite_where=_WORKING),
        Index("ix_turns_waiting_since", "updated_at", postgresql_where=_WAITING, sqlite_where=_WAITING),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    trajectory_id: Mapped[int] = mapped_column(ForeignKey("trajectories.id", ondelete="CASCADE"), index=True)
    turn_index: Mapped[int]
    state: Mapped[str] = mapped_column(String(16), default=TurnState.pending.value)
    # Lease bookkeeping: every claim bumps `attempts` (all stages, never reset), and a store is
    # accepted only from the latest claim; `stage_attempts` counts the claims of the current stage.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    stage_attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None]

    # generation
    prompt_messages: Mapped[list[Any] | None]
    raw_response: Mapped[str | None] = mapped_column(Text)
    finish_reason: Mapped[dict[str, Any] | None]
    prompt_tokens: Mapped[int | None]
    completion_tokens: Mapped[int | None]
    cached_tokens: Mapped[int | None]
    generation_meta: Mapped[dict[str, Any] | None]
    # A streamed answer kturn aborted for a loop: where the loop began (offset in raw_response), and
    # how much was decoded from there on (tokens: None when the server gave no running count).
    loop_onset: Mapped[int | None]
    chars_after_onset: Mapped[int | None]
    tokens_after_onset: Mapped[int | None]

    # cleaning
    cleaned_response: Mapped[str | None] = mapped_column(Text)
    thinking: Mapped[str | None] = mapped_column(Text)
    code: Mapped[str | None] = mapped_column(Text)
    degenerate: Mapped[bool | None] = mapped_column(Boolean)
    severity: Mapped[float | None]
    repeat_period: Mapped[int | None]
    repeats: Mapped[int | None]
    chars_removed: Mapped[int | None]
    no_code_reason: Mapped[str | None] = mapped_column(Text)
    cleaning_warnings: Mapped[list[Any] | None]

    # build (ahead of evaluation, on a CPU host): what was built and how long it took
    prebuild: Mapped[dict[str, Any] | None]

    # evaluation
    compiled: Mapped[bool | None] = mapped_column(Boolean)
    correct: Mapped[bool | None] = mapped_column(Boolean)
    runtime_ms: Mapped[float | None]
    baseline_ms: Mapped[float | None]
    speedup: Mapped[float | None]
    flags: Mapped[list[Any] | None]
    error_kind: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    evaluation: Mapped[dict[str, Any] | None]  # the full verdict: timings with spread, details, fingerprint
    feedback: Mapped[str | None] = mapped_column(Text)
    reward: Mapped[float | None]
    return_: Mapped[float | None] = mapped_column("return", Float)

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    generated_at: Mapped[datetime | None]
    cleaned_at: Mapped[datetime | None]
    built_at: Mapped[datetime | None]
    evaluated_at: Mapped[datetime | None]

    trajectory: Mapped[Trajectory] = relationship(back_populates="turns")


class TurnTokens(Base):
    """Token-level truth of one turn's generation, when the run records tokens: the exact prompt ids
    sent (input_ids mode; NULL when the server tokenized the prompt), the output ids and their
    logprobs (one per output token). Arrays on Postgres, packed 32-bit BLOBs on SQLite."""

    __tablename__ = "turn_tokens"

    turn_id: Mapped[int] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), primary_key=True)
    prompt_ids: Mapped[list[int] | None] = mapped_column(TokenArray("i"))
    output_ids: Mapped[list[int] | None] = mapped_column(TokenArray("i"))
    output_logprobs: Mapped[list[float] | None] = mapped_column(TokenArray("f"))
    weight_version: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Build(Base):
    """A candidate extension built by a build worker, keyed by the build cache's key (sources,
    arguments, toolchain, environment): how a build reaches an evaluate worker on another host."""

    __tablename__ = "builds"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    meta: Mapped[dict[str, Any]]
    module: Mapped[bytes | None] = mapped_column(LargeBinary)  # NULL for a failed build
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TurnBuild(Base):
    """Which builds a turn's answer asked for."""

    __tablename__ = "turn_builds"

    turn_id: Mapped[int] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(ForeignKey("builds.key", ondelete="CASCADE"), primary_key=True, index=True)


class Baseline(Base):
    """Reference timings, cached per (problem source hash, device fingerprint key)."""

    __tablename__ = "baselines"

    problem_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    median_ms: Mapped[float]
    spread_ms: Mapped[float]
    trials: Mapped[int]
    fingerprint: Mapped[dict[str, Any]]
    measured_at: Mapped[datetime] = mapped_column(default=utcnow)


class PreflightRequest(Base):
    """A problem's pre-flight asked of the evaluate workers, where the run's device is: the CLI
    writes the request, a worker its verdict; the CLI deletes both once it has read them."""

    __tablename__ = "preflight_requests"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    source_hash: Mapped[str] = mapped_column(String(64))
    settings: Mapped[dict[str, Any]]  # the evaluation settings it runs under
    derive_memory_limit: Mapped[bool] = mapped_column(Boolean)  # the worker's host decides the memory cap
    verdict: Mapped[dict[str, Any] | None]
    worker: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    answered_at: Mapped[datetime | None]
