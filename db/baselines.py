"""Reference timings cached per (problem source hash, device fingerprint key)."""
from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from db.models import Baseline, utcnow


def get(session: Session, problem_hash: str, device_key: str) -> Baseline | None:
    return session.get(Baseline, (problem_hash, device_key))


def put(session: Session, problem_hash: str, device_key: str, median_ms: float, spread_ms: float, trials: int, fingerprint: dict[str, Any]) -> None:
    row = session.get(Baseline, (problem_hash, device_key)) or Baseline(problem_hash=problem_hash, device_key=device_key)
    row.median_ms, row.spread_ms, row.trials, row.fingerprint, row.measured_at = median_ms, spread_ms, trials, fingerprint, utcnow()
    session.merge(row)
