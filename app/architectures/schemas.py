"""Response bodies for architectures."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from app.architectures.spec import Architecture


class InputRead(BaseModel):
    name: str
    shape: list[int | str]
    dtype: str


class ArchitectureRead(BaseModel):
    name: str
    description: str
    config_schema: dict[str, Any]
    default_config: dict[str, Any]
    inputs: list[InputRead]

    @classmethod
    def of(cls, arch: Architecture) -> ArchitectureRead:
        config = arch.default_config
        return cls(
            name=arch.name,
            description=arch.description,
            config_schema=arch.config_schema,
            default_config=config,
            inputs=[InputRead.model_validate(spec.describe()) for spec in arch.inputs(config)],
        )
