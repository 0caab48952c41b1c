"""Generation queries: token-level truth per turn, the turns a worker should stop generating, and
a run's prefix-cache figures."""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from db.models import Trajectory, Turn, TurnState, TurnTokens


def store_tokens(session: Session, turn_id: int, prompt_ids: list[int] | None, output_ids: list[int] | None,
                 output_logprobs: list[float] | None, weight_version: str | None) -> None:
    """One row per turn; a later attempt's tokens replace an earlier one's."""
    session.merge(TurnTokens(turn_id=turn_id, prompt_ids=prompt_ids, output_ids=output_ids,
                             output_logprobs=output_logprobs, weight_version=weight_version))


def tokens_of(session: Session, turn_id: int) -> TurnTokens | None:
    return session.get(TurnTokens, turn_id)


def no_longer_generating(session: Session, turn_ids: Collection[int]) -> list[int]:
    """Of these turns, those whose generation should stop: cancelled, or handed on meanwhile."""
    if not turn_ids:
        return []
    return list(session.scalars(select(Turn.id).where(Turn.id.in_(list(turn_ids)), Turn.state != TurnState.generating.value)))


@dataclass(frozen=True)
class CacheFigures:
    prompt_tokens: int
    cached_tokens: int
    later_prompt_tokens: int  # turns after the first, whose prefix a server should still hold
    later_cached_tokens: int
    loop_aborts: int
    generated_turns: int

    @property
    def hit_rate(self) -> float | None:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else None

    @property
    def later_hit_rate(self) -> float | None:
        return self.later_cached_tokens / self.later_prompt_tokens if self.later_prompt_tokens else None


def cache_figures(session: Session, run_id: int) -> CacheFigures:
    """Prefix-cache hits of a run (cached prompt tokens over prompt tokens), over all turns and over
    the turns after the first, and how many answers were aborted for a loop."""
    later = Turn.turn_index > 0
    row = session.execute(
        select(
            func.coalesce(func.sum(Turn.prompt_tokens), 0),
            func.coalesce(func.sum(Turn.cached_tokens), 0),
            func.coalesce(func.sum(case((later, Turn.prompt_tokens), else_=0)), 0),
            func.coalesce(func.sum(case((later, Turn.cached_tokens), else_=0)), 0),
            func.count(Turn.loop_onset),
            func.count(Turn.generated_at),
        )
        .join(Trajectory, Trajectory.id == Turn.trajectory_id)
        .where(Trajectory.run_id == run_id, Turn.cached_tokens.is_not(None))
    ).one()
    return CacheFigures(*(int(v) for v in row))
