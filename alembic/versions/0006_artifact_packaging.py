"""artifacts.packaging: how a download is served, a column instead of a key in the validation report

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 12:00:00.000000
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_artifacts = sa.table(
    "artifacts",
    sa.column("id", sa.Integer()),
    sa.column("kind", sa.String()),
    sa.column("validation", sa.JSON()),
    sa.column("packaging", sa.String()),
)
_jobs = sa.table("jobs", sa.column("seq", sa.Integer()), sa.column("artifact", sa.JSON()))


def _packaging(report: Any) -> str:
    # Until now the exporter's report said "zip" for a model served with its external data, else "onnx".
    return "zip" if isinstance(report, dict) and report.get("packaging") == "zip" else "file"


def upgrade() -> None:
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        # The server default fills existing rows; only ONNX zips need more.
        batch_op.add_column(
            sa.Column("packaging", sa.String(length=16), server_default="file", nullable=False)
        )
    bind = op.get_bind()
    onnx = bind.execute(
        sa.select(_artifacts.c.id, _artifacts.c.validation).where(_artifacts.c.kind == "onnx")
    ).all()
    zipped = [artifact_id for artifact_id, validation in onnx if _packaging(validation) == "zip"]
    if zipped:
        bind.execute(sa.update(_artifacts).where(_artifacts.c.id.in_(zipped)).values(packaging="zip"))
    # Jobs keep a snapshot of the artifact they produced: it gains the same field.
    for seq, snapshot in bind.execute(sa.select(_jobs.c.seq, _jobs.c.artifact)).all():
        if isinstance(snapshot, dict) and "packaging" not in snapshot:
            filled = {**snapshot, "packaging": _packaging(snapshot.get("validation"))}
            bind.execute(sa.update(_jobs).where(_jobs.c.seq == seq).values(artifact=filled))


def downgrade() -> None:
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.drop_column("packaging")
