"""Response body of GET /v1/uploads/{id}."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from app.versions.schemas import VersionRead


class UploadRead(BaseModel):
    id: str
    model: str
    offset: int
    length: int
    state: Literal["receiving", "ingesting", "done", "failed"]
    filename: str | None
    version: VersionRead | None
    error: dict[str, Any] | None
    expires_at: datetime
