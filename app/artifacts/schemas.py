"""Response bodies for artifacts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class ArtifactRead(BaseModel):
    kind: str
    format: str
    size: int
    sha256: str
    created_at: datetime
    validation: dict[str, Any]
    filename: str
    url: str
