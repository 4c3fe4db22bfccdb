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
    created_at: datetime
    validation: dict[str, Any]
    packaging: Packaging
