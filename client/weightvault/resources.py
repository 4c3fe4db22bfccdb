"""What the server returns (Model, Version, Artifact, Job), read from its JSON.

Each keeps the whole JSON object as ``raw`` (what ``--json`` prints); the named fields are the contract's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from weightvault.errors import UnexpectedResponse

T = TypeVar("T")


def _get(data: dict[str, Any], key: str, kind: type[T], what: str) -> T:
    value = data.get(key)
    if not isinstance(value, kind):
        raise UnexpectedResponse(f"The server's {what} has no valid {key!r} field.")
    return value


def _optional(data: dict[str, Any], key: str, kind: type[T]) -> T | None:
    value = data.get(key)
    return value if isinstance(value, kind) else None


@dataclass(frozen=True)
class Artifact:
    kind: str
    format: str
    size: int
    sha256: str
    filename: str | None
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Artifact:
        return cls(
            kind=_get(data, "kind", str, "artifact"),
            format=_get(data, "format", str, "artifact"),
            size=_get(data, "size", int, "artifact"),
            sha256=_get(data, "sha256", str, "artifact"),
            filename=_optional(data, "filename", str),
            raw=data,
        )


@dataclass(frozen=True)
class Model:
    name: str
    architecture: str
    config: dict[str, Any]
    description: str | None
    created_at: str
    latest_version: int | None
    aliases: dict[str, int]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Model:
        return cls(
            name=_get(data, "name", str, "model"),
            architecture=_get(data, "architecture", str, "model"),
            config=_optional(data, "config", dict) or {},
            description=_optional(data, "description", str),
            created_at=_get(data, "created_at", str, "model"),
            latest_version=_optional(data, "latest_version", int),
            aliases=_optional(data, "aliases", dict) or {},
            raw=data,
        )


@dataclass(frozen=True)
class Version:
    model: str
    version: int
    created_at: str
    metadata: dict[str, Any]
    source: dict[str, Any]
    training: dict[str, Any]
    artifacts: list[Artifact]
    raw: dict[str, Any] = field(repr=False)

    @property
    def epoch(self) -> int | None:
        epoch = self.training.get("epoch")
        return epoch if isinstance(epoch, int) else None

    def artifact(self, kind: str, fmt: str | None = None) -> Artifact | None:
        """The artifact of that kind (and format, else the first listed), if the version has one."""
        for artifact in self.artifacts:
            if artifact.kind == kind and (fmt is None or artifact.format == fmt):
                return artifact
        return None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Version:
        return cls(
            model=_get(data, "model", str, "version"),
            version=_get(data, "version", int, "version"),
            created_at=_get(data, "created_at", str, "version"),
            metadata=_optional(data, "metadata", dict) or {},
            source=_optional(data, "source", dict) or {},
            training=_optional(data, "training", dict) or {},
            artifacts=[Artifact.from_json(a) for a in _optional(data, "artifacts", list) or []],
            raw=data,
        )


@dataclass(frozen=True)
class Job:
    id: str
    kind: str
    status: str
    model: str | None
    version: int | None
    error: dict[str, Any] | None
    artifact: Artifact | None
    report: dict[str, Any] | None
    raw: dict[str, Any] = field(repr=False)

    @property
    def finished(self) -> bool:
        return self.status in ("succeeded", "failed")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        artifact = _optional(data, "artifact", dict)
        return cls(
            id=_get(data, "id", str, "job"),
            kind=_get(data, "kind", str, "job"),
            status=_get(data, "status", str, "job"),
            model=_optional(data, "model", str),
            version=_optional(data, "version", int),
            error=_optional(data, "error", dict),
            artifact=Artifact.from_json(artifact) if artifact is not None else None,
            report=_optional(data, "report", dict),
            raw=data,
        )
