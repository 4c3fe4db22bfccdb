"""Everything the client raises on purpose, each carrying what a caller needs to act on it.

WeightvaultError
├── InvalidRef (also ValueError)   a ref string that cannot name a version ("mnist:prod")
├── ConnectionFailed               the server could not be reached, or the connection broke
├── UnexpectedResponse             the server answered outside the contract (no ETag on a download ...)
├── ChecksumMismatch               downloaded bytes do not hash to the server's ETag; nothing was placed
├── ApiError                       the server answered with {"error": {code, message, details}}
│   ├── RequestRejected            4xx: the request was refused
│   │   ├── BadRequest             400/422 (invalid_*, unsafe_checkpoint, architecture_mismatch ...)
│   │   ├── Unauthorized           401
│   │   ├── Forbidden              403
│   │   ├── NotFound               404 (model_not_found, version_not_found, artifact_not_found ...)
│   │   ├── Conflict               409 (model_exists)
│   │   └── TooLarge               413
│   └── ServerError                5xx
└── ConversionFailed               an ONNX job ended "failed" (the job's code and message)
    └── WaitTimeout                the job did not finish in time (it may still succeed later)
"""

from __future__ import annotations

from typing import Any


class WeightvaultError(Exception):
    """Base of every error the client raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRef(WeightvaultError, ValueError):
    """A ref string that does not name a model version."""


class ConnectionFailed(WeightvaultError):
    """The server could not be reached (refused, timed out, or the connection broke)."""


class UnexpectedResponse(WeightvaultError):
    """The server's answer does not follow the contract."""


class ChecksumMismatch(WeightvaultError):
    """The downloaded bytes do not match the checksum the server announced (its CRC-32, or the sha256)."""

    def __init__(self, message: str, *, expected: str, actual: str) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class ApiError(WeightvaultError):
    """The server answered with an error body."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.details = details or {}

    def __str__(self) -> str:
        return f"{self.message} ({self.status} {self.code})"

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class RequestRejected(ApiError):
    """A 4xx answer: the request was refused."""


class BadRequest(RequestRejected):
    """400 or 422: something in the request (or the uploaded file) was wrong."""


class Unauthorized(RequestRejected):
    """401: no token, or a bad one."""


class Forbidden(RequestRejected):
    """403: the token's scope is too small."""


class NotFound(RequestRejected):
    """404: the model, version, artifact or job does not exist."""


class Conflict(RequestRejected):
    """409: e.g. the model already exists."""


class TooLarge(RequestRejected):
    """413: the file is larger than the server accepts."""


class ServerError(ApiError):
    """5xx: a fault on the server's side."""


class ConversionFailed(WeightvaultError):
    """An ONNX conversion job failed; ``code`` and ``message`` are the job's."""

    def __init__(self, message: str, *, code: str, job_id: str) -> None:
        super().__init__(message)
        self.code = code
        self.job_id = job_id

    def __str__(self) -> str:
        return f"{self.message} ({self.code}, job {self.job_id})"


class WaitTimeout(ConversionFailed):
    """The job had not finished when the wait ran out; it may still finish."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    422: BadRequest,
}


def api_error(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> ApiError:
    """The typed exception for an error answer."""
    if status in _BY_STATUS:
        cls = _BY_STATUS[status]
    elif 400 <= status < 500:
        cls = RequestRejected
    else:
        cls = ServerError
    return cls(status, code, message, details)
