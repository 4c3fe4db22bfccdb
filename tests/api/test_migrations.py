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


@pytest.mark.parametrize("start", ["0003", "0009"])
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
    finally:
        engine.dispose()
