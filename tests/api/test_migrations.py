"""Upgrading a database written by an earlier release keeps every row: a SQLite table rebuilt by a batch
migration must not take the rows that point at it (ON DELETE CASCADE) with it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import MetaData, Table, create_engine, func, select, text

from app.db.migrate import upgrade


def _value(column: Any) -> Any:
    """A value for a required column of whatever type the reflected schema gives it."""
    try:
        kind = column.type.python_type
    except NotImplementedError:
        kind = str
    defaults: dict[type, Any] = {int: 1, str: "x", dict: {}, list: [], bool: False, float: 0.0, bytes: b""}
    return datetime.now(UTC) if kind is datetime else defaults.get(kind, "x")


def _insert(conn: Any, table: Table, **values: Any) -> int:
    row = {
        c.name: _value(c)
        for c in table.columns
        if c.name not in values and not c.nullable and c.server_default is None and not c.primary_key
    }
    return int(conn.execute(table.insert().values(**row, **values).returning(table.c.id)).scalar_one())


@pytest.mark.parametrize("start", ["0003", "0009", "0012"])
def test_upgrading_keeps_versions_artifacts_and_aliases(database_url: str, start: str) -> None:
    upgrade(database_url, start)
    engine = create_engine(database_url)
    try:
        tables = MetaData()
        tables.reflect(engine, only=["models", "versions", "artifacts", "aliases"])
        models, versions, artifacts, aliases = (
            tables.tables[n] for n in ("models", "versions", "artifacts", "aliases")
        )
        with engine.begin() as conn:
            model = _insert(conn, models, name="kept", architecture="simple-linear")
            version = _insert(conn, versions, model_id=model, number=1)
            _insert(conn, artifacts, version_id=version, kind="weights", format="safetensors")
            _insert(conn, aliases, model_id=model, version_id=version, name="prod")

        upgrade(database_url, "head")

        with engine.begin() as conn:
            for table in (models, versions, artifacts, aliases):
                assert conn.scalar(select(func.count()).select_from(text(table.name))) == 1, table.name
            # The triggers of migration 0010 count the changes made after it.
            before = conn.scalar(text("SELECT revision FROM models"))
            conn.execute(text("UPDATE versions SET description = 'edited'"))
            assert conn.scalar(text("SELECT revision FROM models")) == before + 1
            # Artifacts stored before migration 0013 have no CRC-32: downloads announce none.
            assert conn.scalar(text("SELECT crc32 FROM artifacts")) is None
    finally:
        engine.dispose()


def test_writers_of_two_models_do_not_wait_for_each_other_on_the_list_counter(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's row locks: SQLite serialises its writers anyway")
    upgrade(database_url, "head")
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            for name in ("left", "right"):
                conn.execute(
                    text(
                        "INSERT INTO models (name, architecture, config, created_at, last_version) "
                        "VALUES (:name, 'simple-linear', '{}', now(), 0)"
                    ),
                    {"name": name},
                )
        with engine.connect() as conn:
            start = conn.scalar(text("SELECT revision FROM read_revisions WHERE name = 'models'"))
        with engine.connect() as first, engine.connect() as second:
            first.execute(text("UPDATE models SET description = 'a' WHERE name = 'left'"))  # not committed
            # The list counter is bumped at commit: the second writer neither waits nor deadlocks.
            second.execute(text("SET lock_timeout = '2s'"))
            second.execute(text("UPDATE models SET description = 'b' WHERE name = 'right'"))
            second.commit()
            first.commit()
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT revision FROM read_revisions WHERE name = 'models'")) == start + 2
            revisions = dict(conn.execute(text("SELECT name, revision FROM models")).all())
            assert revisions == {"left": 1, "right": 1}
    finally:
        engine.dispose()
