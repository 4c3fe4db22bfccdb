"""Substring search of model names by SQLite's FTS5 trigram index (migration 0011).

``lower(name) LIKE '%q%'`` reads every candidate model; the trigram table answers which ids hold ``q``
(three characters or more: a trigram index has nothing shorter to look up) from its index. The caller
keeps the ``LIKE`` as well, so the rows are exactly those the scan would return. PostgreSQL answers the
same ``LIKE`` from its pg_trgm index (migration 0009) and needs nothing here.

The index pays per match (each id is looked up, then the matches sorted by name), the scan in name order
per model read until a page is full. So the index is asked only when it narrows: fewer than
``MAX_INDEXED_MATCHES`` matches (counted by the index, at most that many read). A commoner string fills a
page within a short scan (at least that many models hold it). Measured on 10,000 models: a string held
by 10 models, 0.13 ms by the index and 2.1 ms by the scan; one held by all of them, 4.5 ms and 0.10 ms.
"""

from __future__ import annotations

import weakref
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, func, literal_column, select, text
from sqlalchemy.engine import Dialect

from app.api.names import NAME_CHARS
from app.db.raw_reads import ReadConnection

TRIGRAM_TABLE = "models_name_trigram"
MIN_TRIGRAM_CHARS = 3
MAX_INDEXED_MATCHES = 500

_IDS: Select[Any] = (
    select(literal_column("rowid"))
    .select_from(text(TRIGRAM_TABLE))
    .where(text(f"{TRIGRAM_TABLE} MATCH :phrase"))
)
_FEW: Select[Any] = select(func.count().label("matches")).select_from(_IDS.limit(bindparam("cap")).subquery())
# The table and the three triggers that keep it (a table without them would hide new models).
_EXISTS: Select[Any] = (
    select(func.count().label("present"))
    .select_from(text("sqlite_master"))
    .where(
        text(
            f"(type = 'table' AND name = '{TRIGRAM_TABLE}') OR (type = 'trigger' AND name IN "
            "('wv_models_insert_trigram', 'wv_models_delete_trigram', 'wv_models_update_trigram'))"
        )
    )
)

_present: weakref.WeakKeyDictionary[Dialect, bool] = weakref.WeakKeyDictionary()


def uses_trigram_index(conn: ReadConnection, q: str) -> bool:
    """Whether a search for ``q`` on ``conn`` should ask the trigram table: SQLite with the table, ``q``
    long enough, and fewer than ``MAX_INDEXED_MATCHES`` names holding it. The table's presence is looked
    up once per engine (a SQLite without FTS5 has none)."""
    if len(q) < MIN_TRIGRAM_CHARS or conn.dialect.name != "sqlite" or not NAME_CHARS.issuperset(q):
        return False
    found = _present.get(conn.dialect)
    if found is None:
        found = _present[conn.dialect] = conn.scalar(_EXISTS) == 4
    if not found:
        return False
    matches = conn.scalar(_FEW, {"phrase": match_phrase(q), "cap": MAX_INDEXED_MATCHES})
    return int(matches or 0) < MAX_INDEXED_MATCHES


def trigram_match(model_id: ColumnElement[Any]) -> ColumnElement[bool]:
    """``model_id`` is the id of a model whose name holds the ``phrase`` parameter (``match_phrase``)."""
    return model_id.in_(_IDS)


def match_phrase(q: str) -> str:
    """``q`` as one FTS5 phrase: its characters in a row, quotes doubled, no query syntax (a NUL, which
    FTS5 refuses, never gets here: it is no name character)."""
    return '"' + q.replace('"', '""') + '"'
