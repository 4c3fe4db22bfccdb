"""Request and response bodies for versions."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.api.metadata import EditBody
from app.api.responses import StoredJson, StoredText
from app.artifacts.schemas import ArtifactRead


class SourceFile(BaseModel):
    filename: StoredText
    size: int
    sha256: str


class Source(BaseModel):
    filename: StoredText | None
    # size and sha256 of a folder upload cover the bytes received (the tar or zip; for several parts,
    # their sum and the sha256 of their sorted "name sha256" lines); ``files`` lists each file.
    size: int
    sha256: str
    format: Literal["torch_zip", "torch_legacy", "safetensors"]
    layout: Literal["state_dict", "training_checkpoint", "lightning", "module"]
    files: list[SourceFile] | None = None


class Training(BaseModel):
    epoch: int | None
    step: int | None
    optimizer: StoredText | None


class VersionUpdate(EditBody):
    """Fields left out stay as they are; ``metadata`` replaces the stored object as a whole (no merge)."""


class VersionRead(BaseModel):
    model: str
    version: int
    created_at: datetime
    description: StoredText | None = Field(description="Free text, set with PATCH; null when none was set")
    metadata: StoredJson
    source: Source
    training: Training
    validation: StoredJson
    artifacts: list[ArtifactRead]
