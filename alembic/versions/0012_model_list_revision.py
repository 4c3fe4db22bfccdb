"""read_revisions: a counter the database bumps on every change to any model (so to any model list page);
models.revision also counts changes to the model's own row (description, metadata, last version)

``GET /v1/models`` pages (and searches) are kept by the API processes under the ``models`` row of
``read_revisions`` (``app.api.read_cache``), and a model's record under its own ``models.revision``.
Migration 0010's triggers bump ``models.revision`` for changes to a model's versions, artifacts and
aliases; these triggers add the model's own row, and bump the list counter whenever any models row
changes (which every one of those bumps is), in the writing transaction.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29 21:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BUMP_LIST = "UPDATE read_revisions SET revision = revision + 1 WHERE name = 'models'"


def upgrade() -> None:
    op.create_table(
        "read_revisions",
        sa.Column("name", sa.String(length=32), primary_key=True),
        sa.Column("revision", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.execute("INSERT INTO read_revisions (name, revision) VALUES ('models', 0)")
    if op.get_bind().dialect.name == "postgresql":
        # The list's counter is bumped at commit (a deferred constraint trigger): its one row's lock is the
        # last a writing transaction takes and is held only while it commits. Taken at the first models
        # write instead, it would serialise all writers and could deadlock a statement that changes two
        # models (A, then the counter, then B) with a writer of B waiting for the counter.
        op.execute(
            "CREATE FUNCTION wv_models_list_revision() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"{_BUMP_LIST}; RETURN NULL; END $$"
        )
        op.execute(
            "CREATE CONSTRAINT TRIGGER wv_models_list_revision AFTER INSERT OR UPDATE OR DELETE ON models "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION wv_models_list_revision()"
        )
        # The model's own counter, in the row being written; never backwards (a hand-set revision).
        op.execute(
            "CREATE FUNCTION wv_models_own_revision() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.revision <= OLD.revision THEN NEW.revision := OLD.revision + 1; END IF; "
            "RETURN NEW; END $$"
        )
        op.execute(
            "CREATE TRIGGER wv_models_own_revision BEFORE UPDATE ON models "
            "FOR EACH ROW EXECUTE FUNCTION wv_models_own_revision()"
        )
        return
    for event in ("insert", "update", "delete"):
        op.execute(
            f"CREATE TRIGGER wv_models_{event}_list_revision AFTER {event.upper()} ON models BEGIN {_BUMP_LIST}; END"
        )
    # SQLite runs no trigger from within itself (recursive_triggers is off), and the WHEN skips the bumps
    # migration 0010's triggers make. (SQLite writers are serialised anyway: no lock order to mind.) A
    # future batch rebuild of models must drop and recreate 0010's triggers, which name it.
    op.execute(
        "CREATE TRIGGER wv_models_own_revision AFTER UPDATE ON models WHEN NEW.revision <= OLD.revision "
        "BEGIN UPDATE models SET revision = OLD.revision + 1 WHERE id = NEW.id; END"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in ("wv_models_list_revision", "wv_models_own_revision"):
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON models")
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    else:
        for event in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS wv_models_{event}_list_revision")
        op.execute("DROP TRIGGER IF EXISTS wv_models_own_revision")
    op.drop_table("read_revisions")
