"""Engine and session factory for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pydantic_core
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from app.db.raw_reads import DriverReads, ReadConnection

SQLITE_BUSY_TIMEOUT_MS = 30_000
READ_BUSY_TIMEOUT_MS = 50
WRITE_OPTION = "weightvault_write"
READ_OPTION = "weightvault_read"
T = TypeVar("T")
HELD_READ_SECONDS = 5.0


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


def make_read_engine(url: str) -> Engine:
    """An engine for the hot reads ``app.api.fast_reads`` answers, each of which falls back to FastAPI (and
    the main engine) when it fails.

    SQLite: one connection, used only by the event loop's thread, so a read never waits for a pool; its
    busy timeout is short, as a read that had to wait would stall the loop (WAL readers do not wait for
    writers; this covers the rare recovery lock). PostgreSQL: a pool without ``pool_pre_ping``, whose
    ``SELECT 1`` round trip per checkout cost as much as the read: a connection the server dropped fails
    its read, the pool discards it and FastAPI's retry runs on the pre-pinged main engine.
    """
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": READ_BUSY_TIMEOUT_MS / 1000},
            json_deserializer=json_loads,
            poolclass=StaticPool,
        )
        _configure_sqlite(engine, busy_timeout_ms=READ_BUSY_TIMEOUT_MS)
        return engine
    # Small: these connections come on top of the main pool's, per API process, against the server's
    # max_connections (100 by default); a read waiting for one waits in a worker thread, not the loop.
    return create_engine(url, pool_size=5, max_overflow=5, json_deserializer=json_loads)


def is_file_sqlite(url: str) -> bool:
    """A SQLite database in a file (a second connection to ``:memory:`` would be another database)."""
    return url.startswith("sqlite") and ":memory:" not in url and not url.rstrip("/").endswith("sqlite:")


def _configure_sqlite(engine: Engine, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from pysqlite so that writers can ask for BEGIN IMMEDIATE:
        # a deferred transaction that reads first and writes later fails with SQLITE_BUSY under WAL
        # instead of waiting, which breaks concurrent version allocation.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
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


class HeldReadConnection:
    """A read connection kept open between reads, for the SQLite reads the event loop runs itself: opening
    and closing one (a pool check-out, events, a new ``Connection``) cost about a third of a read by key.

    Each statement is still its own snapshot, as on ``read_connection``'s connections: no ``BEGIN`` is sent
    and every result is fetched to its end, which ends the statement's read. A database error discards
    the connection; the next read opens another. So does age: a SQLite connection that was open while
    another one bulk-wrote and analysed the tables read a model 4x slower than a new one (measured after
    ``benchmarks.fill``), and a reconnection every few seconds costs nothing measurable.
    """

    def __init__(self, engine: Engine, max_age_seconds: float = HELD_READ_SECONDS) -> None:
        self.engine = engine
        self.max_age_seconds = max_age_seconds
        self._conn: Connection | None = None
        self._reads: DriverReads | None = None
        self._opened = 0.0

    def run(self, read: Callable[[ReadConnection], T]) -> T:
        """``read`` on this connection, through ``DriverReads`` (statements run on the driver directly)."""
        reads = self._reads
        if reads is not None and time.monotonic() - self._opened > self.max_age_seconds:
            self.close()
            reads = None
        if reads is None:
            conn = self.engine.connect()
            conn.execution_options(**{READ_OPTION: True})
            self._conn, self._opened = conn, time.monotonic()
            reads = self._reads = DriverReads(conn)
        try:
            return read(reads)
        except (DBAPIError, sqlite3.Error):
            self.close()
            raise

    def close(self) -> None:
        """Close the connection, the driver's too (the engine's pool holds this one connection)."""
        self._reads = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()
            self.engine.dispose()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)


def begin_write(session: Session) -> None:
    """Start the session's transaction as a writer (SQLite: ``BEGIN IMMEDIATE``; a no-op elsewhere).

    Call before the first statement of a transaction that will write.
    """
    if session.in_transaction():
        session.rollback()
    session.connection(execution_options={WRITE_OPTION: True})
