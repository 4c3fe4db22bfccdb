"""Request and response bodies for models and aliases."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.api.metadata import Description, EditBody, MetadataIn
from app.api.responses import StoredJson, StoredText


class ModelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=1024, examples=["demo"])
    architecture: str = Field(max_length=1024, examples=["simple-linear"])
    config: dict[str, Any] | None = None
    description: Description = None
    metadata: MetadataIn = Field(default=None, examples=[{"team": "vision"}])


class ModelUpdate(EditBody):
    """Fields left out stay as they are; ``metadata`` replaces the stored object as a whole (no merge)."""


class ModelRead(BaseModel):
    name: str
    architecture: str
    config: StoredJson
    description: StoredText | None
    metadata: StoredJson = Field(description="User metadata (a JSON object; {} when none was set)")
    created_at: datetime
    latest_version: int | None
    aliases: dict[str, int]


class AliasSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int | str = Field(description="A version number (or a ref: an alias or 'latest').")
