"""artifacts.storage and artifacts.recipe_sha256: an artifact may be a recipe composing it from tensor blobs;
artifact_tensors: which tensor blobs each such artifact's recipe reads (what gc keeps)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 15:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        # Existing rows are whole files, as written until now: the server default says so, and both
        # kinds are read, so no stored version needs rewriting.
        batch_op.add_column(sa.Column("storage", sa.String(length=16), server_default="file", nullable=False))
        batch_op.add_column(sa.Column("recipe_sha256", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_artifacts_recipe_sha256", ["recipe_sha256"], unique=False)
    op.create_table(
        "artifact_tensors",
        sa.Column("artifact_id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["artifact_id"], ["artifacts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("artifact_id", "sha256"),
    )
    op.create_index("ix_artifact_tensors_sha256", "artifact_tensors", ["sha256"], unique=False)


def downgrade() -> None:
    # Only a data dir without recipe-backed artifacts can go back: older code would serve a recipe as a file.
    bind = op.get_bind()
    composed = bind.execute(sa.text("SELECT count(*) FROM artifacts WHERE storage = 'recipe'")).scalar()
    if composed:
        raise RuntimeError(
            f"{composed} artifacts are stored as recipes; the schema before 0008 cannot hold them"
        )
    op.drop_index("ix_artifact_tensors_sha256", table_name="artifact_tensors")
    op.drop_table("artifact_tensors")
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.drop_index("ix_artifacts_recipe_sha256")
        batch_op.drop_column("recipe_sha256")
        batch_op.drop_column("storage")
