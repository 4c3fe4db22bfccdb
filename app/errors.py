"""Domain errors, each carrying its HTTP status and the contract's error code.

WeightvaultError
├── BadRequest (4xx the client can fix)
│   ├── InvalidRequest            422 invalid_request
│   ├── InvalidName               422 invalid_name
│   ├── InvalidConfig             422 invalid_config
│   ├── InvalidMetadata           422 invalid_metadata
│   ├── InvalidFormat             422 invalid_format
│   ├── InvalidCursor             422 invalid_cursor
│   ├── ArchitectureNotFoundInput 422 architecture_not_found (named in a request body)
│   ├── InvalidArchitecture       422 invalid_architecture (a registration that cannot be used)
│   ├── CheckpointRejected
│   │   ├── UnsafeCheckpoint      422 unsafe_checkpoint
│   │   ├── UnreadableCheckpoint  422 unreadable_checkpoint
│   │   └── ArchitectureMismatch  422 architecture_mismatch
│   ├── TooLarge                  413 too_large
│   ├── LimitExceeded             422 limit_exceeded
│   └── UploadTimeout             408 upload_timeout (stalled or too slow; closes the connection)
├── IngestFailed (the ingest child process died or overran; nothing of the upload is kept)
│   ├── IngestCrashed             422 ingest_crashed (killed by a signal or over its memory limit)
│   └── IngestTimeout             503 ingest_timeout (over its time limit)
├── NotFound (404)
│   ├── RouteNotFound, ArchitectureNotFound, ModelNotFound, VersionNotFound,
│   └── ArtifactNotFound, JobNotFound
├── Conflict (409)
│   ├── ModelExists               409 model_exists
│   ├── AliasInUse                409 alias_in_use (details.aliases)
│   ├── ArchitectureExists        409 architecture_exists
│   ├── ArchitectureInUse         409 architecture_in_use (details.models)
│   └── ArchitectureReadOnly      409 architecture_read_only (built-in and plugin ones)
└── Unauthorized 401 / Forbidden 403
"""

from __future__ import annotations

from typing import Any, ClassVar


class WeightvaultError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    # True when the client may still be sending: the answer then closes the connection, or the server
    # would go on reading (and discarding) whatever the client keeps sending.
    close_connection: ClassVar[bool] = False

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class BadRequest(WeightvaultError):
    status = 422
    code = "invalid_request"


class InvalidRequest(BadRequest):
    code = "invalid_request"


class InvalidName(BadRequest):
    code = "invalid_name"


class InvalidConfig(BadRequest):
    code = "invalid_config"


class InvalidMetadata(BadRequest):
    code = "invalid_metadata"


class InvalidFormat(BadRequest):
    code = "invalid_format"


class InvalidCursor(BadRequest):
    code = "invalid_cursor"


class ArchitectureNotFoundInput(BadRequest):
    code = "architecture_not_found"


class InvalidArchitecture(BadRequest):
    code = "invalid_architecture"


class CheckpointRejected(BadRequest):
    """The uploaded file was refused; nothing of it is kept."""


class UnsafeCheckpoint(CheckpointRejected):
    code = "unsafe_checkpoint"


class UnreadableCheckpoint(CheckpointRejected):
    code = "unreadable_checkpoint"


class ArchitectureMismatch(CheckpointRejected):
    code = "architecture_mismatch"


class TooLarge(BadRequest):
    status = 413
    code = "too_large"


class LimitExceeded(BadRequest):
    code = "limit_exceeded"


class UploadTimeout(BadRequest):
    status = 408
    code = "upload_timeout"
    close_connection = True


class IngestFailed(WeightvaultError):
    """The child process reading the upload did not finish; it was replaced, nothing was kept."""

    status = 422
    code = "ingest_crashed"


class IngestCrashed(IngestFailed):
    code = "ingest_crashed"


class IngestTimeout(IngestFailed):
    status = 503
    code = "ingest_timeout"


class NotFound(WeightvaultError):
    status = 404
    code = "not_found"


class RouteNotFound(NotFound):
    code = "not_found"


class ArchitectureNotFound(NotFound):
    code = "architecture_not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class VersionNotFound(NotFound):
    code = "version_not_found"


class ArtifactNotFound(NotFound):
    code = "artifact_not_found"


class JobNotFound(NotFound):
    code = "job_not_found"


class Conflict(WeightvaultError):
    status = 409
    code = "conflict"


class ModelExists(Conflict):
    code = "model_exists"


class AliasInUse(Conflict):
    code = "alias_in_use"


class ArchitectureExists(Conflict):
    code = "architecture_exists"


class ArchitectureInUse(Conflict):
    code = "architecture_in_use"


class ArchitectureReadOnly(Conflict):
    code = "architecture_read_only"


class Unauthorized(WeightvaultError):
    status = 401
    code = "unauthorized"


class Forbidden(WeightvaultError):
    status = 403
    code = "forbidden"
