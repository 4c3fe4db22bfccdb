"""Response bodies for jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from app.artifacts.schemas import ArtifactRead


class JobError(BaseModel):
    code: str
    message: str


class JobRead(BaseModel):
    id: str
    kind: Literal["onnx"]
    status: Literal["queued", "running", "succeeded", "failed"]
    model: str
    version: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    options: dict[str, Any]
    attempts: int
    error: JobError | None
    artifact: ArtifactRead | None
    report: dict[str, Any] | None
