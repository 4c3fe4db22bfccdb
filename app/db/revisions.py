"""The counters the database keeps for the read cache, and whether its triggers are all there.

``models.revision`` (migrations 0010 and 0012) changes with a model's row, versions, artifacts and aliases;
``read_revisions`` row ``models`` (migration 0012) with any models row, so with any model list page.

The read cache (``app.api.read_cache``) is only as fresh as those triggers. A hand-made schema, a restore
that left triggers out, or a future SQLite batch migration that rebuilt one of the tables (which drops the
table's triggers) would let kept bodies outlive the rows they were built from; without every trigger the
API processes keep nothing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Column, Engine, MetaData, Select, String, Table, select, text

from app.db.raw_reads import ReadConnection

_TABLES = ("versions", "artifacts", "aliases")
_EVENTS = ("insert", "update", "delete")
SQLITE_TRIGGERS = frozenset(
    [f"wv_{table}_{event}_revision" for table in _TABLES for event in _EVENTS]
    + [f"wv_models_{event}_list_revision" for event in _EVENTS]
    + ["wv_models_own_revision"]
)
POSTGRESQL_TRIGGERS = frozenset(
    [f"wv_{table}_revision" for table in _TABLES] + ["wv_models_list_revision", "wv_models_own_revision"]
)

# Not an ORM table: nothing but the triggers writes it.
read_revisions = Table(
    "read_revisions",
    MetaData(),
    Column("name", String(32), primary_key=True),
    Column("revision", BigInteger, nullable=False),
)
_LIST_STAMP: Select[Any] = select(read_revisions.c.revision).where(read_revisions.c.name == "models")


def model_list_stamp(conn: ReadConnection) -> int | None:
    """The models list's counter (None if its row is missing; the table is there from migration 0012)."""
    value = conn.scalar(_LIST_STAMP)
    return None if value is None else int(value)


def revision_triggers_present(engine: Engine) -> bool:
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            found = conn.scalars(
                text(
                    "SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                    "WHERE NOT t.tgisinternal AND t.tgenabled <> 'D' "
                    "AND c.relnamespace = current_schema()::regnamespace"
                )
            )
            return set(found) >= POSTGRESQL_TRIGGERS
        found = conn.scalars(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
        return set(found) >= SQLITE_TRIGGERS
