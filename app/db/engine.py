"""Engine and session factory for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pydantic_core
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000
WRITE_OPTION = "weightvault_write"
READ_OPTION = "weightvault_read"


def json_loads(text: str | bytes) -> Any:
    """JSON columns read back: pydantic's Rust parser (about 3x ``json.loads`` on our small objects),
    ``json.loads`` for what it refuses (a lone surrogate escape, stored before uploads refused them)."""
    try:
        return pydantic_core.from_json(text)
    except ValueError:
        return json.loads(text)


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout, foreign keys and ``BEGIN IMMEDIATE`` for writes."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, json_deserializer=json_loads
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, json_deserializer=json_loads)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from pysqlite so that writers can ask for BEGIN IMMEDIATE:
        # a deferred transaction that reads first and writes later fails with SQLITE_BUSY under WAL
        # instead of waiting, which breaks concurrent version allocation.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if options.get(READ_OPTION, False):
            return  # each statement its own implicit read transaction (see read_connection)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get(WRITE_OPTION, False) else "BEGIN")


@contextmanager
def read_connection(engine: Engine) -> Iterator[Connection]:
    """A connection for reads whose every statement is its own snapshot: no BEGIN and no ROLLBACK round trip.

    For the hot GETs, each answered by one statement (or a model check, then one statement); a caller
    that needs several statements to agree uses a session. SQLite: no ``BEGIN`` is sent, so the driver
    (transaction control taken in ``_on_connect``) runs each statement in autocommit. PostgreSQL:
    the driver's autocommit, restored when the connection goes back to the pool.
    """
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.execution_options(**{READ_OPTION: True})
        else:
            conn.execution_options(isolation_level="AUTOCOMMIT")
        yield conn


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)


def begin_write(session: Session) -> None:
    """Start the session's transaction as a writer (SQLite: ``BEGIN IMMEDIATE``; a no-op elsewhere).

    Call before the first statement of a transaction that will write.
    """
    if session.in_transaction():
        session.rollback()
    session.connection(execution_options={WRITE_OPTION: True})
