"""Engines and sessions: one pool per database URL per process, and what runs on it."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.engine import Compiled, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql import Executable


@dataclass(frozen=True)
class _Database:
    """What a process keeps per database URL, made together so that none outlives the others in a
    cache: the one pool (`pooled`, what single statements run on), the engine for transactions on
    that pool, and the sessions made on it."""

    pooled: Engine
    transactional: Engine
    sessions: sessionmaker


@lru_cache(maxsize=8)
def _database(url: str) -> _Database:
    """On Postgres the pool's connections are in autocommit from the start: the stages' single
    statements (`statement_scope`) take them as they are, and only a transaction sets READ
    COMMITTED (the level the locking in db/ is written for, whatever the server's default) at
    checkout and has it reset at checkin. Setting and resetting it for every single statement
    instead cost 0.37-0.40 ms of CPU per statement against 0.26-0.27 ms."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        pooled = transactional = create_engine(url, connect_args={"timeout": 30})
        event.listen(pooled, "connect", _sqlite_pragmas)
    else:
        # No pre-ping: it costs a round trip per checkout. A connection that died in the pool fails
        # its first statement with an OperationalError, which invalidates it; the stages retry that.
        pooled = create_engine(url, pool_pre_ping=False, isolation_level="AUTOCOMMIT")
        transactional = pooled.execution_options(isolation_level="READ COMMITTED")
    return _Database(pooled, transactional, sessionmaker(transactional, expire_on_commit=False))


def engine_for(url: str) -> Engine:
    """The engine for transactions (sessions, migrations), on the URL's one pool."""
    return _database(url).transactional


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back if it raises."""
    session = _database(url).sessions()
    try:
        with session.begin():
            yield session
    finally:
        session.close()


@contextmanager
def transaction_scope(url: str) -> Iterator[Connection]:
    """One transaction on a Core connection, for a stage's steps of several statements that need
    no ORM object (the end of a trajectory): a session's bookkeeping would cost more CPU than they."""
    with engine_for(url).begin() as connection:
        yield connection


@contextmanager
def statement_scope(url: str) -> Iterator[Connection]:
    """For steps that are one statement on Postgres: there each statement commits by itself
    (autocommit), one round trip instead of three (BEGIN, the statement, COMMIT). On SQLite, which
    runs in-process and may need several statements for the same step, the block is one
    transaction, as in `session_scope`. A Core connection, not a session: these are the stages' hot
    steps, and a session's bookkeeping cost twice the CPU of the statement it sent."""
    with _database(url).pooled.begin() as connection:
        yield connection


# What the queries of db/ run on: a session (a transaction with ORM objects) or a Core connection
# (statement_scope).
Executor = Session | Connection


def dialect_of(db: Executor) -> str:
    """The dialect's name of a session or a connection: the queries take either."""
    return db.dialect.name if isinstance(db, Connection) else db.get_bind().dialect.name


def driver_rows(db: Executor, statement: Executable, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of `statement` as dicts, on Postgres run straight on the driver's cursor (see
    `_on_driver`); elsewhere (the embedded SQLite, in-process) through SQLAlchemy. For a stage's
    claim, which reads some twenty columns, SQLAlchemy's execution path (its events, result
    metadata and row objects) cost as much CPU again as the statement itself: 0.54-1.6 ms against
    0.34-0.88 ms here, on a loaded 2-core box. (A process that claims for several stages pays more
    still: their claims share one cached compilation, so the result metadata is rebuilt on each.)"""
    if dialect_of(db) != "postgresql":
        return [row._asdict() for row in db.execute(statement, params)]
    return _on_driver(db, statement, params, lambda cursor: cursor.fetchall())


def driver_rowcount(db: Executor, statement: Executable, params: dict[str, Any]) -> int:
    """The rows `statement` changed, on Postgres run straight on the driver's cursor (see
    `_on_driver`): a stage's store, whose SQLAlchemy execution cost about 0.3 ms of CPU more than
    the statement. Elsewhere through SQLAlchemy."""
    if dialect_of(db) != "postgresql":
        return db.execute(statement, params).rowcount
    return _on_driver(db, statement, params, lambda cursor: cursor.rowcount)


def _on_driver(db: Executor, statement: Executable, params: dict[str, Any], result: Callable[[Any], Any]) -> Any:
    """Run a hot statement on the DBAPI cursor under `db` (a Core connection or a session's), with
    its SQL compiled once and its parameters bound as SQLAlchemy binds them (its bind processors:
    the JSON columns' serialisation); rows come as dicts built by psycopg (tests/test_driver_rows.py
    compares both ways with SQLAlchemy's own). Errors are raised as SQLAlchemy raises them, and a
    lost connection is invalidated with every older one of its pool (the server likely dropped them
    all), as `execute` does."""
    from psycopg.rows import dict_row  # here: the embedded default (SQLite) never loads psycopg

    if isinstance(db, Session):
        db.flush()  # what session.execute does first (autoflush): pending objects reach the server before the statement
    connection = db if isinstance(db, Connection) else db.connection()
    prepared = _for_driver(statement, connection.dialect)
    dbapi = connection.dialect.loaded_dbapi
    cursor = connection.connection.dbapi_connection.cursor(row_factory=dict_row)  # names read off the result: no Column objects
    try:
        cursor.execute(prepared.compiled.string, prepared.bound(params))
        return result(cursor)
    except dbapi.Error as error:
        lost = connection.dialect.is_disconnect(error, connection.connection.dbapi_connection, cursor)
        if lost:  # SQLAlchemy's own handling of a lost connection: older pooled ones are replaced at checkout
            connection.engine.pool._invalidate(connection.connection, error)
            connection.invalidate(error)
        raise DBAPIError.instance(prepared.compiled.string, params, error, dbapi.Error, connection_invalidated=lost, dialect=connection.dialect) from error
    finally:
        cursor.close()


@dataclass(frozen=True)
class _DriverStatement:
    compiled: Compiled
    processors: dict[str, Callable[[Any], Any]]  # by parameter: how SQLAlchemy converts its value for the driver

    def bound(self, params: dict[str, Any]) -> dict[str, Any]:
        values = self.compiled.construct_params(params)
        for name, process in self.processors.items():
            if name in values:
                values[name] = process(values[name])
        return values


@lru_cache(maxsize=64)
def _for_driver(statement: Executable, dialect: Dialect) -> _DriverStatement:
    compiled = statement.compile(dialect=dialect)
    if compiled.post_compile_params or compiled.literal_execute_params:  # IN lists: SQLAlchemy renders them per execution
        raise ValueError("a statement with parameters rendered at execution (an IN list) cannot run on the driver as compiled")
    processors = {name: process for name, bind in compiled.binds.items()
                  if (process := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None}
    return _DriverStatement(compiled, processors)
