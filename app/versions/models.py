"""Table: versions of a model."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import ForeignKey, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db.base import Base, utcnow

if TYPE_CHECKING:
    from app.artifacts.models import Artifact


class Version(Base):
    __tablename__ = "versions"
    __table_args__ = (UniqueConstraint("model_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    number: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    user_metadata: Mapped[dict[str, Any]] = mapped_column("metadata")
    description: Mapped[str | None] = mapped_column(Text)
    source: Mapped[dict[str, Any]]
    training: Mapped[dict[str, Any]]
    validation: Mapped[dict[str, Any]]

    artifacts: Mapped[list[Artifact]] = relationship(
        back_populates="version",
        cascade="all, delete-orphan",
        passive_deletes=True,
        lazy="selectin",
        order_by="Artifact.id",
    )
