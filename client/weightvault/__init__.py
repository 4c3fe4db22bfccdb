"""The weightvault Python client: push checkpoints from a training script, pull and load them back.

    from weightvault import Client

    client = Client("http://127.0.0.1:8000", token=...)
    client.push("mnist", model, optimizer=opt, epoch=10, metadata={"acc": 0.98})
    model = client.load_into(Net(), "mnist@production")
    epoch = client.resume("mnist", model, optimizer)
    path = client.to_onnx("mnist:3", wait=True)

It needs httpx (and torch to load weights), never the server's dependencies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from weightvault.errors import (
    ApiError,
    BadRequest,
    ChecksumMismatch,
    Conflict,
    ConnectionFailed,
    ConversionFailed,
    Forbidden,
    InvalidRef,
    NotFound,
    RequestRejected,
    ServerError,
    TooLarge,
    Unauthorized,
    UnexpectedResponse,
    WaitTimeout,
    WeightvaultError,
)
from weightvault.refs import Ref, parse_ref
from weightvault.resources import Artifact, Job, Model, Version

if TYPE_CHECKING:
    from weightvault.client import Client
    from weightvault.download import Pulled

__all__ = [
    "ApiError",
    "Artifact",
    "BadRequest",
    "ChecksumMismatch",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "ConversionFailed",
    "Forbidden",
    "InvalidRef",
    "Job",
    "Model",
    "NotFound",
    "Pulled",
    "Ref",
    "RequestRejected",
    "ServerError",
    "TooLarge",
    "Unauthorized",
    "UnexpectedResponse",
    "Version",
    "WaitTimeout",
    "WeightvaultError",
    "parse_ref",
]


def __getattr__(name: str) -> Any:
    # The modules that import httpx load on first use: a `weightvault` command sets up how httpx is
    # imported before that (see weightvault.cli), and `import weightvault.errors` stays light.
    if name == "Client":
        from weightvault.client import Client

        return Client
    if name == "Pulled":
        from weightvault.download import Pulled

        return Pulled
    raise AttributeError(f"module 'weightvault' has no attribute {name!r}")
