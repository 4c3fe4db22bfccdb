"""Alembic environment: runs migrations on the URL the app (or alembic.ini) gives."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from app.db.engine import make_engine
from app.db.tables import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=sqlite)
    if not sqlite:
        with context.begin_transaction():
            context.run_migrations()
        return
    # A batch migration rebuilds a SQLite table (copy, DROP, rename). With foreign keys on, that DROP
    # deletes every row whose ON DELETE CASCADE points at the table: rebuilding ``models`` would take all
    # versions, artifacts and aliases with it. So foreign keys are off while migrating (the pragma only
    # takes effect outside a transaction), and checked before the migration commits.
    driver = connection.connection.driver_connection
    assert driver is not None
    enforced = driver.execute("PRAGMA foreign_keys").fetchone()[0]
    driver.execute("PRAGMA foreign_keys=OFF")
    if driver.execute("PRAGMA foreign_keys").fetchone()[0]:
        raise RuntimeError("SQLite migrations need a connection outside a transaction (foreign keys stay on)")
    try:
        with context.begin_transaction():
            context.run_migrations()
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"the migration left rows whose foreign keys point nowhere: {broken[:5]}")
    finally:
        driver.execute(f"PRAGMA foreign_keys={'ON' if enforced else 'OFF'}")


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
