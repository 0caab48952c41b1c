"""Alembic environment: the URL comes from the caller (`db.migrate`) or from kturn's settings."""
from alembic import context
from sqlalchemy import engine_from_config, pool

from db.models import Base

config = context.config
if not config.get_main_option("sqlalchemy.url"):
    from orchestrator.settings import get_settings

    config.set_main_option("sqlalchemy.url", get_settings().sqlalchemy_url)


def run_migrations(connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:  # handed over by db.migrate
        run_migrations(connection)
        return
    engine = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.connect() as connection:
        run_migrations(connection)


run_migrations_online()
