"""Process-wide settings, read from the environment (pydantic-settings).

`DATABASE_URL` and `REDIS_URL` take the standard URL forms. With neither set, kturn runs its
embedded default: a SQLite file under `KTURN_HOME` and an in-process worker on Celery's in-memory
transport.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KTURN_", extra="ignore")

    database_url: str | None = Field(default=None, validation_alias=AliasChoices("DATABASE_URL", "KTURN_DATABASE_URL"))
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL", "KTURN_REDIS_URL"))
    home: Path = Path(".kturn")
    # A working turn renews its lease every third of it; one whose lease runs out (its worker died)
    # is handed on by the reconciler.
    lease_seconds: float = 120.0
    # A turn whose stage keeps losing its worker (crash, kill) fails after this many claims of that stage.
    max_attempts: int = 3
    # Seconds a Redis message may stay unacknowledged before Redis hands it out again.
    visibility_timeout: int = 3600
    # Generate workers: requests in flight at most per model server, per worker process (the
    # worker's own concurrency, `-c`, bounds the total), and how often a worker checks whether the
    # turns it is generating were cancelled (their requests are then aborted).
    server_max_in_flight: int = 128
    cancel_poll_seconds: float = 1.0
    # What kturn keeps between runs on this host (pre-flight verdicts under preflight/).
    cache_dir: Path = Path("~/.cache/kturn")

    def half_configured(self) -> str | None:
        """Why these settings are unusable when exactly one of the two URLs is set: the CLI would
        store to the embedded SQLite while enqueueing to the real Redis (or the reverse), and
        nothing would ever run the turns."""
        if (self.database_url is None) == (self.redis_url is None):
            return None
        given, missing = ("DATABASE_URL", "REDIS_URL") if self.redis_url is None else ("REDIS_URL", "DATABASE_URL")
        return (f"{given} is set but {missing} is not: a cluster needs both (the database and the broker), "
                "the embedded default neither")

    @property
    def embedded(self) -> bool:
        return self.redis_url is None

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url is None:
            return f"sqlite:///{(self.home / 'kturn.sqlite').resolve()}"
        return to_sqlalchemy_url(self.database_url)

    @property
    def broker_url(self) -> str:
        return self.redis_url or "memory://"


def to_sqlalchemy_url(url: str) -> str:
    """`postgresql://…` (what users and libpq write) → the psycopg 3 driver SQLAlchemy needs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
