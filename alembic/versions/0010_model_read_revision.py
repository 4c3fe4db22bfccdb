"""models.revision: a counter the database bumps on every change to a model's versions, artifacts or aliases

The API processes keep the bodies of version reads and pages keyed by (model id, created_at, revision)
(``app.api.read_cache``). Triggers, not the application, bump it: every write path (uploads, edits,
deletes, alias moves, finished conversions, fsck repairs, a maintenance script's SQL) is covered, in the
writing transaction, so the next read after a write has answered sees a new revision in any process.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29 20:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, the statement naming the model ids a row of it belongs to, for NEW or OLD)
_OWNERS = {
    "versions": "SELECT {row}.model_id",
    "aliases": "SELECT {row}.model_id",
    "artifacts": "SELECT model_id FROM versions WHERE id = {row}.version_id",
}
_EVENTS = {"insert": ("NEW",), "update": ("NEW", "OLD"), "delete": ("OLD",)}


def _sqlite_triggers() -> list[str]:
    statements = []
    for table, owner in _OWNERS.items():
        for event, rows in _EVENTS.items():
            ids = " UNION ".join(owner.format(row=row) for row in rows)
            statements.append(
                f"CREATE TRIGGER wv_{table}_{event}_revision AFTER {event.upper()} ON {table} "
                f"BEGIN UPDATE models SET revision = revision + 1 WHERE id IN ({ids}); END"
            )
    return statements


def _postgresql_triggers() -> list[str]:
    # One function per table: the row variables a DELETE (OLD) or INSERT (NEW) trigger has differ.
    statements = []
    for table, owner in _OWNERS.items():
        ids = (
            f"CASE TG_OP WHEN 'INSERT' THEN ARRAY({owner.format(row='NEW')}) "
            f"WHEN 'DELETE' THEN ARRAY({owner.format(row='OLD')}) "
            f"ELSE ARRAY({owner.format(row='NEW')} UNION {owner.format(row='OLD')}) END"
        )
        statements.append(
            f"CREATE FUNCTION wv_{table}_revision() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"UPDATE models SET revision = revision + 1 WHERE id = ANY({ids}); RETURN NULL; END $$"
        )
        statements.append(
            f"CREATE TRIGGER wv_{table}_revision AFTER INSERT OR UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION wv_{table}_revision()"
        )
    return statements


def upgrade() -> None:
    # Not a batch operation: SQLite adds a column with a constant default in place, without rebuilding the
    # table. (A future batch rebuild of versions, artifacts or aliases drops their triggers: recreate them.)
    op.add_column("models", sa.Column("revision", sa.BigInteger(), server_default="0", nullable=False))
    dialect = op.get_bind().dialect.name
    for statement in _postgresql_triggers() if dialect == "postgresql" else _sqlite_triggers():
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in _OWNERS:
        if dialect == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS wv_{table}_revision ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS wv_{table}_revision()")
        else:
            for event in _EVENTS:
                op.execute(f"DROP TRIGGER IF EXISTS wv_{table}_{event}_revision")
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_column("revision")
