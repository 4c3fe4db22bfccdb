"""The hot reads' Core statements on the driver's connection (sqlite3, psycopg), each compiled once.

Executing a prepared Core statement through SQLAlchemy (the compiled-cache lookup, the execution
context, events, the cursor result's metadata) was about a third of a read by key that the event loop
answers itself. ``DriverReads`` runs the very same statements, compiled by SQLAlchemy once per statement
(and list length, for an expanding ``IN``), straight on the driver's connection, and applies the same
result processors (JSON and timestamp columns) SQLAlchemy would. It offers the part of ``Connection``
the hot reads use (``execute(...).all()``/``.first()``/iteration and ``scalar``), so the services take
either (``ReadConnection``). A statement it cannot run the same way (a bind with a processor, column
names a row cannot carry) raises ``NotCompilable`` before touching the database: the caller falls back.
"""

from __future__ import annotations

import weakref
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Select
from sqlalchemy.engine import Dialect


class NotCompilable(Exception):
    """The statement needs SQLAlchemy's own execution."""


class Rows(list[Any]):
    """A statement's rows (named tuples), with the ``Result`` methods the hot reads call."""

    def all(self) -> list[Any]:
        return self

    def first(self) -> Any:
        return self[0] if self else None


_POSTCOMPILE = "__[POSTCOMPILE_{}]"


class _Compiled:
    __slots__ = ("by_length", "compiled", "expanding", "named", "positions", "processors", "row", "sql")

    def __init__(self, statement: Select[*tuple[Any, ...]], dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        positions = tuple(compiled.positiontup or ())
        for bind in compiled.binds.values():
            if bind.type.dialect_impl(dialect).bind_processor(dialect) is not None:
                raise NotCompilable(f"bind {bind.key!r} has a processor")
        self.expanding = frozenset(name for name, bind in compiled.binds.items() if bind.expanding)
        keys = list(statement.selected_columns.keys())
        try:
            self.row: Any = namedtuple("Row", keys)  # type: ignore[misc]
        except ValueError as exc:  # a duplicate or underscore-led key
            raise NotCompilable(str(exc)) from exc
        processors = [
            (i, column.type.dialect_impl(dialect).result_processor(dialect, None))
            for i, column in enumerate(statement.selected_columns)
        ]
        self.processors: tuple[tuple[int, Callable[[Any], Any]], ...] = tuple(
            (i, p) for i, p in processors if p is not None
        )
        if dialect.paramstyle not in ("qmark", "pyformat"):
            raise NotCompilable(f"paramstyle {dialect.paramstyle}")
        self.named = dialect.paramstyle == "pyformat"
        self.compiled = compiled
        self.sql = compiled.string
        self.positions = positions
        self.by_length: dict[tuple[int, ...], str] = {}

    def bound(self, parameters: Mapping[str, Any]) -> tuple[str, Any]:
        """The SQL and the driver's parameters: a list (SQLite's ``?``) or a dict (psycopg's ``%(name)s``)."""
        values = self.compiled.construct_params(dict(parameters))
        for name in self.expanding:
            if not values[name]:  # SQLAlchemy renders an empty IN its own way
                raise NotCompilable("an empty expanding IN")
        if self.named:
            return self._named(dict(values))
        if not self.expanding:
            return self.sql, [values[name] for name in self.positions]
        flat: list[Any] = []
        lengths: list[int] = []
        for name in self.positions:
            if name in self.expanding:
                items: Sequence[Any] = values[name]
                flat.extend(items)
                lengths.append(len(items))
            else:
                flat.append(values[name])
        return self._expanded(lengths, lambda _name, length: ", ".join("?" * length)), flat

    def _named(self, values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if not self.expanding:
            return self.sql, values
        lengths = []
        for name in sorted(self.expanding):
            items = values.pop(name)
            lengths.append(len(items))
            values.update({f"{name}__{i}": item for i, item in enumerate(items)})
        sql = self._expanded(
            lengths, lambda name, length: ", ".join(f"%({name}__{i})s" for i in range(length))
        )
        return sql, values

    def _expanded(self, lengths: list[int], render: Callable[[str, int], str]) -> str:
        key = tuple(lengths)
        sql = self.by_length.get(key)
        if sql is None:
            sql = self.sql
            names = (
                sorted(self.expanding) if self.named else [n for n in self.positions if n in self.expanding]
            )
            for name, length in zip(names, lengths, strict=True):
                sql = sql.replace(_POSTCOMPILE.format(name), render(name, length), 1)
            if len(self.by_length) < 64:
                self.by_length[key] = sql
        return sql

    def rows(self, fetched: list[Any]) -> Rows:
        make, processors = self.row._make, self.processors
        if not processors:
            return Rows(make(row) for row in fetched)
        out = Rows()
        for row in fetched:
            values = list(row)
            for i, process in processors:
                values[i] = process(values[i])
            out.append(make(values))
        return out


_COMPILED: weakref.WeakKeyDictionary[Dialect, dict[Select[*tuple[Any, ...]], _Compiled]] = (
    weakref.WeakKeyDictionary()
)
_MAX_STATEMENTS = 256


class DriverReads:
    """A read connection running Core ``Select`` statements on its driver connection directly (sqlite3 or
    psycopg).

    Every statement is fetched to its end in autocommit (no ``BEGIN``, as on the connections of
    ``app.db.engine.read_connection``): each is its own snapshot.
    """

    def __init__(self, conn: Connection) -> None:
        self._bind(conn.dialect, conn.connection.driver_connection)

    def _bind(self, dialect: Dialect, driver: Any) -> None:
        self.dialect = dialect
        self.driver: Any = driver
        # Statements are module constants (and a few lru_cached variants), compiled once per dialect
        # (the engine's: its JSON deserializer is in the result processors).
        self._compiled = _COMPILED.setdefault(dialect, {})

    def _prepared(self, statement: Select[*tuple[Any, ...]]) -> _Compiled:
        found = self._compiled.get(statement)
        if found is None:
            if len(self._compiled) >= _MAX_STATEMENTS:
                self._compiled.clear()
            found = self._compiled[statement] = _Compiled(statement, self.dialect)
        return found

    def execute(
        self, statement: Select[*tuple[Any, ...]], parameters: Mapping[str, Any] | None = None
    ) -> Rows:
        prepared = self._prepared(statement)
        sql, values = prepared.bound(parameters or {})
        return prepared.rows(self.driver.execute(sql, values).fetchall())

    def scalar(self, statement: Select[*tuple[Any, ...]], parameters: Mapping[str, Any] | None = None) -> Any:
        row = self.execute(statement, parameters).first()
        return None if row is None else row[0]


# What the hot reads run on: SQLAlchemy's connection, or the driver's through DriverReads.
ReadConnection = Connection | DriverReads
