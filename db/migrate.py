"""Schema migrations through Alembic, driven from code so `kturn db upgrade` needs no alembic.ini."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config(sqlalchemy_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url.replace("%", "%%"))
    return config


def upgrade(sqlalchemy_url: str, revision: str = "head") -> None:
    _run(command.upgrade, sqlalchemy_url, revision)


def downgrade(sqlalchemy_url: str, revision: str) -> None:
    _run(command.downgrade, sqlalchemy_url, revision)


def _run(alembic_command, sqlalchemy_url: str, revision: str) -> None:
    """Run on kturn's own engine, which knows how to open the embedded SQLite file."""
    from db.session import engine_for

    config = alembic_config(sqlalchemy_url)
    with engine_for(sqlalchemy_url).begin() as connection:
        config.attributes["connection"] = connection
        alembic_command(config, revision)


def is_current(sqlalchemy_url: str) -> bool:
    """True when the database is at the newest revision."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from db.session import engine_for

    with engine_for(sqlalchemy_url).connect() as connection:
        current = MigrationContext.configure(connection).get_current_heads()
    return set(current) == set(ScriptDirectory.from_config(alembic_config(sqlalchemy_url)).get_heads())
