"""model metadata, version description, models (architecture, name) index

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 00:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("models", schema=None) as batch_op:
        # The server default fills existing rows (and keeps NOT NULL valid) on both engines.
        batch_op.add_column(sa.Column("metadata", sa.JSON(), server_default=sa.text("'{}'"), nullable=False))
        batch_op.create_index("ix_models_architecture_name", ["architecture", "name"], unique=False)

    with op.batch_alter_table("versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("description", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("versions", schema=None) as batch_op:
        batch_op.drop_column("description")

    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_index("ix_models_architecture_name")
        batch_op.drop_column("metadata")
