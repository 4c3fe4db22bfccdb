"""SQLite: an FTS5 trigram index of models.name, so ``GET /v1/models?q=`` does not read every model

``?q=`` is a case-insensitive substring match, which no b-tree index can answer; on PostgreSQL pg_trgm
answers it (migration 0009). On SQLite an external-content FTS5 table with the trigram tokenizer (SQLite
3.34 and later) finds the ids of the models whose name holds a string of three characters or more;
triggers keep it in step with the models table in the writing transaction. A SQLite built without FTS5
gets no table: the search stays correct and scans, as before.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29 21:05:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "models_name_trigram"
_TRIGGERS = {
    "insert": f"AFTER INSERT ON models BEGIN INSERT INTO {TABLE}(rowid, name) VALUES (new.id, new.name); END",
    "delete": (
        f"AFTER DELETE ON models BEGIN "
        f"INSERT INTO {TABLE}({TABLE}, rowid, name) VALUES ('delete', old.id, old.name); END"
    ),
    "update": (
        f"AFTER UPDATE OF name ON models BEGIN "
        f"INSERT INTO {TABLE}({TABLE}, rowid, name) VALUES ('delete', old.id, old.name); "
        f"INSERT INTO {TABLE}(rowid, name) VALUES (new.id, new.name); END"
    ),
}


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    savepoint = bind.begin_nested()
    try:
        bind.execute(
            sa.text(
                f"CREATE VIRTUAL TABLE {TABLE} USING fts5("
                "name, content='models', content_rowid='id', tokenize='trigram')"
            )
        )
    except sa.exc.OperationalError:  # no FTS5 or no trigram tokenizer in this SQLite
        savepoint.rollback()
        return
    savepoint.commit()
    for event, body in _TRIGGERS.items():
        op.execute(f"CREATE TRIGGER wv_models_{event}_trigram {body}")
    op.execute(f"INSERT INTO {TABLE}({TABLE}) VALUES ('rebuild')")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for event in _TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS wv_models_{event}_trigram")
    op.execute(f"DROP TABLE IF EXISTS {TABLE}")
