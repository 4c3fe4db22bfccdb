"""artifacts.crc32: the download's CRC-32, sent as X-Weightvault-Crc32 so clients check a download at
ISA-L's speed instead of re-hashing its sha256

Rows written before this have none (null): the server sends no CRC for them and clients check the
sha256, as before.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 03:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("artifacts", sa.Column("crc32", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    # A plain DROP COLUMN (SQLite 3.35+): a batch rebuild would drop migration 0010's triggers on artifacts.
    op.drop_column("artifacts", "crc32")
