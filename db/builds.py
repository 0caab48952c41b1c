"""Builds made by build workers, as they travel to evaluate workers: rows keyed by the build
cache's key, and which of them each turn asked for."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db.models import Build, TurnBuild

_INSERT = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def save(session: Session, turn_id: int, entries: Iterable[tuple[str, dict[str, Any], bytes | None]]) -> None:
    """Store (key, meta, module) entries once each (the same build serves every turn that asks
    for it) and link them to the turn."""
    insert = _INSERT[session.get_bind().dialect.name]
    rows = [{"key": key, "meta": meta, "module": module, "size_bytes": len(module or b"")} for key, meta, module in entries]
    if not rows:
        return
    session.execute(insert(Build).on_conflict_do_nothing(index_elements=["key"]), rows)
    session.execute(insert(TurnBuild).on_conflict_do_nothing(index_elements=["turn_id", "key"]),
                    [{"turn_id": turn_id, "key": row["key"]} for row in rows])


def for_turn(session: Session, turn_id: int) -> list[tuple[str, dict[str, Any], bytes | None]]:
    """The builds a turn asked for, as (key, meta, module), in one query."""
    query = select(Build.key, Build.meta, Build.module).join(TurnBuild, TurnBuild.key == Build.key).where(TurnBuild.turn_id == turn_id)
    return [(key, meta, module) for key, meta, module in session.execute(query)]
