"""Table: architectures registered over HTTP (built-in and plugin ones are code, not rows)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.architectures.spec import Registration
from app.db.base import Base, utcnow


class RegisteredArchitecture(Base):
    __tablename__ = "registered_architectures"

    # A new id per registration: processes cache what they built from it by id, so a name deleted and
    # registered again is never served from a stale cache.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    library: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text)
    config: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    factory: Mapped[str | None] = mapped_column(String(256))
    kwargs: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # InputSpec.to_data of each example input, declared or derived when it was registered.
    inputs: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    parameters: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def record(self) -> Registration:
        return Registration(
            id=self.id,
            name=self.name,
            library=self.library,
            description=self.description,
            config=self.config,
            factory=self.factory,
            kwargs=self.kwargs,
            inputs=list(self.inputs),
            parameters=self.parameters,
        )
