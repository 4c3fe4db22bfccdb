"""Request and response bodies for models and aliases."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ModelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=1024, examples=["demo"])
    architecture: str = Field(max_length=1024, examples=["simple-linear"])
    config: dict[str, Any] | None = None
    description: str | None = Field(default=None, max_length=10_000)


class ModelRead(BaseModel):
    name: str
    architecture: str
    config: dict[str, Any]
    description: str | None
    created_at: datetime
    latest_version: int | None
    aliases: dict[str, int]


class AliasSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int | str = Field(description="A version number (or a ref: an alias or 'latest').")
