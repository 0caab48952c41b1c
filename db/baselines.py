"""Reference timings cached per (problem source hash, device fingerprint key)."""
from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db.models import Baseline, utcnow

_INSERT = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def get(session: Session, problem_hash: str, device_key: str) -> Baseline | None:
    return session.get(Baseline, (problem_hash, device_key))


def put(session: Session, problem_hash: str, device_key: str, median_ms: float, spread_ms: float, trials: int, fingerprint: dict[str, Any]) -> None:
    """Insert or replace: two evaluators may measure the same baseline at once."""
    values = {"median_ms": median_ms, "spread_ms": spread_ms, "trials": trials, "fingerprint": fingerprint, "measured_at": utcnow()}
    insert = _INSERT[session.get_bind().dialect.name](Baseline).values(problem_hash=problem_hash, device_key=device_key, **values)
    session.execute(insert.on_conflict_do_update(index_elements=["problem_hash", "device_key"], set_=values))
