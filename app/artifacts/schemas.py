"""Response bodies for artifacts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from app.artifacts.naming import Packaging


class ArtifactRead(BaseModel):
    kind: str
    format: str
    size: int
    sha256: str
    # 8 hex digits; null for artifacts stored before it was recorded.
    crc32: str | None = None
    created_at: datetime
    validation: dict[str, Any]
    filename: str
    url: str


class ArtifactSnapshot(BaseModel):
    """An artifact as a job recorded it (``jobs.artifact``): a later conversion may replace the file."""

    kind: str
    format: str
    size: int
    sha256: str
    crc32: str | None = None
    created_at: datetime
    validation: dict[str, Any]
    packaging: Packaging
