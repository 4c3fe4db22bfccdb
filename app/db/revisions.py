"""Whether the database keeps ``models.revision`` current: the triggers of migration 0010 are all there.

The read cache (``app.api.read_cache``) is only as fresh as those triggers. A hand-made schema, a restore
that left triggers out, or a future SQLite batch migration that rebuilt one of the tables (which drops the
table's triggers) would let kept bodies outlive the rows they were built from; without every trigger the
API processes keep nothing.
"""

from __future__ import annotations

from sqlalchemy import Engine, text

_TABLES = ("versions", "artifacts", "aliases")
SQLITE_TRIGGERS = frozenset(
    f"wv_{table}_{event}_revision" for table in _TABLES for event in ("insert", "update", "delete")
)
POSTGRESQL_TRIGGERS = frozenset(f"wv_{table}_revision" for table in _TABLES)


def revision_triggers_present(engine: Engine) -> bool:
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            found = conn.scalars(
                text(
                    "SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                    "WHERE NOT t.tgisinternal AND c.relnamespace = current_schema()::regnamespace"
                )
            )
            return set(found) >= POSTGRESQL_TRIGGERS
        found = conn.scalars(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
        return set(found) >= SQLITE_TRIGGERS
