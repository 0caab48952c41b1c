"""Pre-flights asked of the evaluate workers: the CLI's requests and the workers' verdicts."""
from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from db.models import PreflightRequest, utcnow


def ask(session: Session, requests: Iterable[dict[str, Any]]) -> None:
    """Rows of id, source, source_hash, settings and derive_memory_limit."""
    rows = list(requests)
    if rows:
        session.execute(insert(PreflightRequest), rows)


def pending(session: Session, request_id: str) -> PreflightRequest | None:
    """The request, unless it is gone (its CLI stopped waiting) or already answered."""
    found = session.get(PreflightRequest, request_id)
    return None if found is None or found.verdict is not None else found


def answer(session: Session, request_id: str, verdict: dict[str, Any], worker: str) -> None:
    """The first answer stands (a message delivered twice is checked twice)."""
    session.execute(update(PreflightRequest).where(PreflightRequest.id == request_id, PreflightRequest.verdict.is_(None))
                    .values(verdict=verdict, worker=worker, answered_at=utcnow()))


def answered(session: Session, request_ids: Iterable[str]) -> dict[str, tuple[dict[str, Any], str]]:
    """(verdict, worker) of each request that has one."""
    rows = session.execute(select(PreflightRequest.id, PreflightRequest.verdict, PreflightRequest.worker)
                           .where(PreflightRequest.id.in_(list(request_ids)), PreflightRequest.verdict.is_not(None)))
    return {request_id: (verdict, worker) for request_id, verdict, worker in rows}


def forget(session: Session, request_ids: Iterable[str]) -> None:
    session.execute(delete(PreflightRequest).where(PreflightRequest.id.in_(list(request_ids))))


def forget_older_than(session: Session, age: timedelta) -> None:
    session.execute(delete(PreflightRequest).where(PreflightRequest.created_at < utcnow() - age))
