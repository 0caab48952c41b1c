"""Engines and sessions. One engine per URL per process."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # No pre-ping: it costs a round trip per checkout. A connection that died in the pool fails
    # its first statement with an OperationalError, which invalidates it; the stages retry that.
    return create_engine(url, pool_pre_ping=False)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


@lru_cache(maxsize=8)
def _sessions(url: str, autocommit: bool) -> sessionmaker:
    engine = engine_for(url)
    return sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT") if autocommit else engine, expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back if it raises."""
    session = _sessions(url, False)()
    try:
        with session.begin():
            yield session
    finally:
        session.close()


@contextmanager
def statement_scope(url: str) -> Iterator[Session]:
    """For steps that are one statement on Postgres: there each statement commits by itself
    (autocommit), one round trip instead of three (BEGIN, the statement, COMMIT). On SQLite, which
    runs in-process and may need several statements for the same step, the block is one
    transaction, as in `session_scope`."""
    session = _sessions(url, not url.startswith("sqlite"))()
    try:
        with session.begin():
            yield session
    finally:
        session.close()
