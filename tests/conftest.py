"""Shared fixtures. Integration tests use the real Postgres and Redis on loopback, in a database and a
Redis db index of their own, and remove both afterwards."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("KTURN_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_BASE_URL = os.environ.get("KTURN_TEST_REDIS_URL", "redis://127.0.0.1:6379")
REDIS_DB = int(os.environ.get("KTURN_TEST_REDIS_DB", "13"))


def pytest_configure(config):
    # One compiled-extension cache for the whole session, workers in subprocesses included:
    # a C++ extension takes ~25 s to build here and many tests build the same source.
    if "KTURN_EXTENSIONS_DIR" not in os.environ:
        cache = Path(os.environ.get("KTURN_TEST_CACHE", ROOT / ".pytest_cache" / "kturn-extensions"))
        cache.mkdir(parents=True, exist_ok=True)
        os.environ["KTURN_EXTENSIONS_DIR"] = str(cache)
    for name in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(name, None)  # tests say where they talk to; a user's cluster is never touched


@pytest.fixture(scope="session")
def postgres_url():
    """A fresh database on the real Postgres, dropped at the end of the session."""
    import psycopg

    name = f"kturn_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True)
    except psycopg.OperationalError as error:
        pytest.fail(f"integration tests need Postgres at {PG_ADMIN_URL} (set KTURN_TEST_PG_ADMIN_URL): {error}")
    admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    yield f"{base}/{name}"
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture(scope="session")
def redis_url():
    """The real Redis, in a db index of the tests' own, flushed before and after."""
    import redis

    url = f"{REDIS_BASE_URL}/{REDIS_DB}"
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError as error:
        pytest.fail(f"integration tests need Redis at {REDIS_BASE_URL} (set KTURN_TEST_REDIS_URL): {error}")
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def db(postgres_url):
    """An engine on the tests' database, for checking what the workers stored."""
    from sqlalchemy import create_engine

    from orchestrator.settings import to_sqlalchemy_url

    engine = create_engine(to_sqlalchemy_url(postgres_url))
    yield engine
    engine.dispose()
