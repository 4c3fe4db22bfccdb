"""Tables: artifacts, each a content-addressed blob or a recipe composing it; the tensor blobs recipes use."""

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
    # CRC-32 of the download (0 .. 2**32 - 1), sent as X-Weightvault-Crc32; null for rows written before
    # it was recorded (clients then check the sha256).
    crc32: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # "file" or "zip" (app.artifacts.naming.Packaging): decides the download's file name and media type.
    packaging: Mapped[str] = mapped_column(String(16), default="file", server_default="file")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    validation: Mapped[dict[str, Any]]
    # How the bytes are stored (app.artifacts.stored): "file", the blob named ``sha256`` is the download;
    # "recipe", the blob named ``recipe_sha256`` is a recipe composing it from tensor blobs, whose names
    # are the artifact's ``tensors`` rows (what gc and fsck count without parsing every recipe).
    storage: Mapped[str] = mapped_column(String(16), default="file", server_default="file")
    recipe_sha256: Mapped[str | None] = mapped_column(String(64), index=True, default=None)

    version: Mapped[Version] = relationship(back_populates="artifacts")
    tensors: Mapped[list[ArtifactTensor]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, lazy="raise"
    )


class ArtifactTensor(Base):
    """A tensor blob a recipe-backed artifact's recipe reads: kept while any such row names it."""

    __tablename__ = "artifact_tensors"

    artifact_id: Mapped[int] = mapped_column(ForeignKey("artifacts.id", ondelete="CASCADE"), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)
