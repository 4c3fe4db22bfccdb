"""Request and response bodies for architectures."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.architectures.spec import Architecture


class InputRead(BaseModel):
    name: str
    shape: list[int | str]
    dtype: str


class InputDeclared(BaseModel):
    """One example input: a forward() argument; shape entries are sizes or symbolic names ("batch")."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, examples=["input_ids"])
    shape: list[int | str] = Field(min_length=0, max_length=8, examples=[["batch", "sequence"]])
    dtype: str = Field(default="float32", max_length=16, examples=["int64"])


class ArchitectureCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=1024, examples=["my-bert"])
    library: str = Field(max_length=128, examples=["transformers"])
    config: dict[str, Any] | None = Field(
        default=None, description="transformers: the dict save_pretrained writes to config.json"
    )
    factory: str | None = Field(
        default=None, max_length=256, description="other libraries: the model constructor's name"
    )
    kwargs: dict[str, Any] | None = Field(default=None, description="the constructor's keyword arguments")
    description: str | None = Field(default=None, max_length=10_000)
    inputs: list[InputDeclared] | None = Field(
        default=None, max_length=16, description="example inputs; derived from the model when left out"
    )


class RegistrationRead(BaseModel):  # type: ignore[no-redef]
    """What a registered architecture was registered from."""

    config: dict[str, Any] | None
    factory: str | None
    kwargs: dict[str, Any] | None


class ArchitectureRead(BaseModel):
    name: str
    description: str
    source: Literal["builtin", "plugin", "registered"]
    library: str | None
    parameters: int = Field(description="parameters of the model its default config builds")
    config_schema: dict[str, Any]
    default_config: dict[str, Any]
    inputs: list[InputRead]
    registration: RegistrationRead | None = None

    @classmethod
    def of(cls, arch: Architecture) -> ArchitectureRead:
        config = arch.default_config
        record = arch.registration
        return cls(
            name=arch.name,
            description=arch.description,
            source=arch.source,
            library=arch.library,
            parameters=arch.parameters,
            config_schema=arch.config_schema,
            default_config=config,
            inputs=[InputRead.model_validate(spec.describe()) for spec in arch.inputs(config)],
            registration=None
            if record is None
            else RegistrationRead(config=record.config, factory=record.factory, kwargs=record.kwargs),
        )
