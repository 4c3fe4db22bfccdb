"""Tables: registered models and their aliases."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db.base import Base, utcnow


class RegisteredModel(Base):
    __tablename__ = "models"
    # Serves ?architecture= in name order (keyset pages) and "which models use this architecture".
    __table_args__ = (Index("ix_models_architecture_name", "architecture", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    architecture: Mapped[str] = mapped_column(String(128))
    config: Mapped[dict[str, Any]]
    description: Mapped[str | None] = mapped_column(Text)
    user_metadata: Mapped[dict[str, Any]] = mapped_column(
        "metadata", default=dict, server_default=text("'{}'")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Highest version number ever handed out; numbers are never reused, even after deletes.
    last_version: Mapped[int] = mapped_column(default=0)
    # Bumped by database triggers (migration 0010) on every change to the model's versions, artifacts or
    # aliases, in the writing transaction: what an API process keeps of a version read or page is keyed
    # by it, so a write that has answered is seen by every process's next read. Never set by the ORM.
    revision: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))

    aliases: Mapped[list[Alias]] = relationship(
        back_populates="model", cascade="all, delete-orphan", passive_deletes=True, lazy="selectin"
    )


class Alias(Base):
    __tablename__ = "aliases"
    __table_args__ = (UniqueConstraint("model_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"), index=True)
    version_number: Mapped[int]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    model: Mapped[RegisteredModel] = relationship(back_populates="aliases")
