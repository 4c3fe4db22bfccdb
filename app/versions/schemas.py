"""Response bodies for versions."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from app.artifacts.schemas import ArtifactRead


class Source(BaseModel):
    filename: str | None
    size: int
    sha256: str
    format: Literal["torch_zip", "torch_legacy", "safetensors"]
    layout: Literal["state_dict", "training_checkpoint", "lightning", "module"]


class Training(BaseModel):
    epoch: int | None
    step: int | None
    optimizer: str | None


class VersionRead(BaseModel):
    model: str
    version: int
    created_at: datetime
    metadata: dict[str, Any]
    source: Source
    training: Training
    validation: dict[str, Any]
    artifacts: list[ArtifactRead]
