"""Table: artifacts, each pointing at a content-addressed blob."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db.base import Base, utcnow

if TYPE_CHECKING:
    from app.versions.models import Version


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("version_id", "kind", "format"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    format: Mapped[str] = mapped_column(String(32))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    # "file" or "zip" (app.artifacts.naming.Packaging): decides the download's file name and media type.
    packaging: Mapped[str] = mapped_column(String(16), default="file", server_default="file")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    validation: Mapped[dict[str, Any]]

    version: Mapped[Version] = relationship(back_populates="artifacts")
