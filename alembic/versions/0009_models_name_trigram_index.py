"""PostgreSQL: a trigram index on lower(models.name), so ``GET /v1/models?q=`` does not read every model

``?q=`` is a case-insensitive substring match (``lower(name) LIKE '%q%'``), which no b-tree index can
answer; pg_trgm's GIN index can. Where the extension is not available, or this role may not create it,
the migration leaves the index out (the search stays correct, it scans). SQLite has no such index: there
``q`` reads the architecture's models by the (architecture, name) index, or every model without one.

Revision ID: 0009
Revises: 0006
Create Date: 2026-11-29 14:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_models_name_trgm"


def _trigram_schema(bind: sa.engine.Connection) -> str | None:
    """The schema pg_trgm is installed in, installing it when it is not (None: not possible here)."""
    find = sa.text(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'pg_trgm'"
    )
    schema = bind.execute(find).scalar()
    if schema is not None:
        return str(schema)
    available = bind.execute(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")).scalar()
    if not available:
        return None
    savepoint = bind.begin_nested()
    try:
        # In public, not the first schema of the search path: an extension is one per database, and a
        # schema dropped with CASCADE (a test's, a tenant's) would take it from every other schema's index.
        bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public"))
    except sa.exc.DBAPIError:  # not allowed to (pg_trgm is trusted, but CREATE on public is needed)
        savepoint.rollback()
        return None
    savepoint.commit()
    schema = bind.execute(find).scalar()
    return None if schema is None else str(schema)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    schema = _trigram_schema(bind)
    if schema is None:
        return
    quoted = bind.dialect.identifier_preparer.quote_schema(schema)
    op.execute(f"CREATE INDEX IF NOT EXISTS {INDEX} ON models USING gin (lower(name) {quoted}.gin_trgm_ops)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP INDEX IF EXISTS {INDEX}")
