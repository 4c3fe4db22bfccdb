"""DriverReads runs Core statements on the driver connection with the rows SQLAlchemy would give."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import JSON, Column, Integer, MetaData, String, Table, bindparam, select
from sqlalchemy.engine import Connection

from app.db.base import UTCDateTime
from app.db.engine import HeldReadConnection, make_read_engine, read_connection
from app.db.raw_reads import DriverReads, NotCompilable

metadata = MetaData()
things = Table(
    "things",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String, nullable=False),
    Column("data", JSON),
    Column("created_at", UTCDateTime()),
)
STATEMENTS: list[tuple[Any, dict[str, Any]]] = [
    (select(things).where(things.c.name == bindparam("name")), {"name": "b"}),
    (select(things.c.id.label("thing_id"), things.c.data).order_by(things.c.id.desc()), {}),
    (
        select(things.c.name, things.c.created_at)
        .where(things.c.id.in_(bindparam("ids", expanding=True)))
        .order_by(things.c.id)
        .limit(bindparam("limit")),
        {"ids": [1, 3], "limit": 5},
    ),
]


@pytest.fixture
def conn(database_url: str) -> Iterator[Connection]:
    engine = make_read_engine(database_url)
    metadata.create_all(engine)
    with engine.begin() as writer:
        writer.execute(
            things.insert(),
            [
                {"id": 1, "name": "a", "data": {"k": [1, 2.5, "caf\u00e9"]}, "created_at": datetime.now(UTC)},
                {"id": 2, "name": "b", "data": None, "created_at": None},
                {"id": 3, "name": "c", "data": {}, "created_at": datetime(2020, 1, 2, 3, 4, 5, 6, UTC)},
            ],
        )
    with read_connection(engine) as connection:
        yield connection
    engine.dispose()


def test_rows_equal_sqlalchemy_rows(conn: Connection) -> None:
    raw = DriverReads(conn)
    for statement, params in STATEMENTS:
        expected = conn.execute(statement, params).all()
        got = raw.execute(statement, params).all()
        assert [tuple(row) for row in got] == [tuple(row) for row in expected]
        assert [row._fields for row in got] == [tuple(row._fields) for row in expected]
        assert raw.execute(statement, params).first() == (tuple(expected[0]) if expected else None)
    # The same statement with another list length is compiled for it.
    statement, _ = STATEMENTS[2]
    assert [row.name for row in raw.execute(statement, {"ids": [3, 2, 1], "limit": 2})] == ["a", "b"]
    assert raw.scalar(select(things.c.data).where(things.c.id == bindparam("id")), {"id": 1}) == {
        "k": [1, 2.5, "caf\u00e9"]
    }
    assert raw.execute(STATEMENTS[0][0], {"name": "b"}).first().created_at is None


def test_what_it_cannot_run_the_same_way_is_refused_before_the_database(conn: Connection) -> None:
    raw = DriverReads(conn)
    with pytest.raises(NotCompilable):  # SQLAlchemy renders an empty IN its own way
        raw.execute(STATEMENTS[2][0], {"ids": [], "limit": 1})
    with pytest.raises(NotCompilable):  # a bound datetime needs the type's bind processor
        raw.execute(select(things.c.id).where(things.c.created_at > bindparam("t", type_=UTCDateTime())), {})


def test_held_connection_reads_through_it(tmp_path: Path) -> None:
    engine = make_read_engine(f"sqlite:///{tmp_path / 'raw.db'}")
    metadata.create_all(engine)
    held = HeldReadConnection(engine)
    try:
        assert held.run(lambda reads: isinstance(reads, DriverReads))
        assert held.run(lambda reads: reads.execute(select(things.c.id)).all()) == []
    finally:
        held.close()
        engine.dispose()
