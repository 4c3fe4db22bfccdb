"""Resumable uploads over the server's tus 1.0 endpoint, for files above a threshold.

A dropped connection costs only the bytes in flight: the client asks the server for its offset (HEAD)
and goes on from there, a few times with backoff. The upload's URL is kept in the cache folder under a
key of (server, model, file, size, modification time), so running the same command again after the CLI
itself was stopped resumes too. When the last byte is in, the server ingests the file exactly like a
direct upload; its outcome (the Version, or the refusal) comes from ``GET /v1/uploads/{id}``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from weightvault.errors import ApiError, ConnectionFailed, NotFound, UnexpectedResponse
from weightvault.progress import Reporter, Task
from weightvault.transport import Transport, check
from weightvault.upload import UPLOAD_CHUNK_BYTES, UPLOAD_TIMEOUT, Upload

TUS = {"Tus-Resumable": "1.0.0"}
DEFAULT_THRESHOLD = 64 * 1024 * 1024
PATCH_BYTES = 256 * 1024 * 1024  # one request's worth; a cut costs at most what was in flight
RESUME_ATTEMPTS = 6
# How long to wait for the server to let go of an upload that an earlier request (of a client that was
# stopped or cut off) still holds: it lets go once it notices that request's connection is gone.
BUSY_WAIT_SECONDS = 120.0
# Checkpoint errors are 422 on a direct upload; the outcome record says which code, not the status.
_STATUS_BY_CODE = {"too_large": 413, "upload_timeout": 408}


def threshold() -> int:
    return int(os.environ.get("WEIGHTVAULT_RESUMABLE_THRESHOLD", DEFAULT_THRESHOLD))


class ResumeState:
    """Where an unfinished upload of this file to this model lives (a JSON file in the cache)."""

    def __init__(self, folder: Path | None, key: str | None) -> None:
        self.path = folder / f"{key}.json" if folder is not None and key is not None else None

    @staticmethod
    def key(server: str, model: str, upload: Upload) -> str | None:
        name = getattr(upload.handle, "name", None)
        if not isinstance(name, str) or not os.path.isfile(name):
            return None  # a temp file or a stream: resumable within this process only
        stat = os.stat(name)
        identity = [server, model, os.path.realpath(name), str(stat.st_size), str(stat.st_mtime_ns)]
        return hashlib.sha256("\n".join(identity).encode()).hexdigest()

    def load(self) -> str | None:
        if self.path is None:
            return None
        try:
            url = json.loads(self.path.read_text())["url"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return url if isinstance(url, str) else None

    def save(self, url: str) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"url": url}))

    def clear(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def send_resumable(
    transport: Transport,
    *,
    model: str,
    upload: Upload,
    metadata: dict[str, Any] | None,
    reporter: Reporter,
    state_dir: Path | None,
) -> dict[str, Any] | None:
    """The Version JSON; None when the server has no resumable endpoint (then send it directly)."""
    state = ResumeState(state_dir, ResumeState.key(transport.base_url, model, upload))
    url = state.load()
    offset = _offset(transport, url, upload.size) if url is not None else None
    if url is None or offset is None:
        url = _create(transport, model, upload, metadata)
        if url is None:
            return None
        offset = 0
        state.save(url)
    label = upload.filename or model
    with reporter.task(f"push {label}", total=upload.size, completed=offset) as task:
        offset = _send_all(transport, url, upload, offset, task)
        task.describe(
            f"{label} sent; server is validating (reading, loading into the architecture, writing and "
            "proving each artifact)"
        )
        outcome = _outcome(transport, url)
    state.clear()
    if outcome.get("state") == "done" and isinstance(outcome.get("version"), dict):
        version: dict[str, Any] = outcome["version"]
        return version
    error = outcome.get("error") or {}
    code = str(error.get("code", "upload_failed"))
    raise ApiError(
        _STATUS_BY_CODE.get(code, 422),
        code,
        str(error.get("message", "The upload was refused.")),
        error.get("details") if isinstance(error.get("details"), dict) else {},
    )


def _create(transport: Transport, model: str, upload: Upload, metadata: dict[str, Any] | None) -> str | None:
    pairs = {"filename": upload.filename or "checkpoint"}
    if metadata:
        pairs["metadata"] = json.dumps(metadata, allow_nan=False)
    encoded = ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in pairs.items())
    headers = {**TUS, "Upload-Length": str(upload.size), "Upload-Metadata": encoded}
    response = transport.call(lambda: transport.http.post(f"/v1/models/{model}/uploads", headers=headers))
    if response.status_code == 404 and _code(response) in ("not_found", "route_not_found"):
        return None  # an older server: no resumable uploads
    check(response)
    location = response.headers.get("location")
    if not location:
        raise UnexpectedResponse("The server started an upload but sent no Location.")
    return str(httpx.URL(transport.base_url + "/").join(location))


def _code(response: httpx.Response) -> str | None:
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        return str(response.json()["error"]["code"])
    return None


def _offset(transport: Transport, url: str, size: int) -> int | None:
    """The server's offset for ``url``, or None when that upload is gone (expired, deleted, finished)."""
    response = transport.call(lambda: transport.http.head(url, headers=TUS))
    if response.status_code in (404, 410):
        return None
    check(response)
    if int(response.headers.get("upload-length", -1)) != size:
        return None
    return int(response.headers["upload-offset"])


class _Busy(ConnectionFailed):
    """The server is still receiving an earlier PATCH of this upload (423 upload_busy)."""


def _send_all(transport: Transport, url: str, upload: Upload, offset: int, task: Task) -> int:
    failures = 0
    busy_since: float | None = None
    while offset < upload.size:
        try:
            offset = _patch(transport, url, upload, offset, task)
            failures, busy_since = 0, None
        except _Busy:
            busy_since = busy_since if busy_since is not None else time.monotonic()
            if time.monotonic() - busy_since > BUSY_WAIT_SECONDS:
                raise
            time.sleep(0.25)
            resumed = _offset(transport, url, upload.size)
            if resumed is None:
                raise
            task.advance(resumed - offset)
            offset = resumed
        except ConnectionFailed:
            failures += 1
            if failures > RESUME_ATTEMPTS:
                raise
            time.sleep(min(0.5 * 2**failures, 10.0))
            resumed = _offset(transport, url, upload.size)
            if resumed is None:
                raise
            task.advance(resumed - offset)
            offset = resumed
    return offset


def _patch(transport: Transport, url: str, upload: Upload, offset: int, task: Task) -> int:
    length = min(PATCH_BYTES, upload.size - offset)
    headers = {
        **TUS,
        "Content-Type": "application/offset+octet-stream",
        "Upload-Offset": str(offset),
        "Content-Length": str(length),
    }
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        upload.handle.seek(upload.start + offset)
        remaining = length
        while remaining:
            chunk = upload.handle.read(min(UPLOAD_CHUNK_BYTES, remaining))
            if not chunk:
                raise UnexpectedResponse(
                    f"{upload.filename or 'The file'} shrank while it was being uploaded."
                )
            remaining -= len(chunk)
            sent += len(chunk)
            task.advance(len(chunk))
            yield chunk

    try:
        response = transport.http.patch(url, content=body(), headers=headers, timeout=UPLOAD_TIMEOUT)
    except httpx.TransportError as exc:
        task.advance(-sent)
        raise ConnectionFailed(
            f"The connection to {transport.base_url} broke during an upload: {exc!r}."
        ) from exc
    if response.status_code == 409 and _code(response) == "offset_mismatch":
        task.advance(-sent)
        raise ConnectionFailed("The server has a different offset; asking it where to resume.")
    if response.status_code == 423 and _code(response) == "upload_busy":
        task.advance(-sent)
        raise _Busy(
            f"The server is still receiving an earlier request for this upload (waited {BUSY_WAIT_SECONDS:.0f}s); "
            "run the push again in a minute to resume it."
        )
    check(response)
    return int(response.headers["upload-offset"])


def _outcome(transport: Transport, url: str) -> dict[str, Any]:
    deadline = time.monotonic() + 3600
    while True:
        try:
            outcome = transport.json("GET", url)
        except NotFound:
            raise UnexpectedResponse("The upload finished but the server no longer knows it.") from None
        if outcome.get("state") in ("done", "failed") or time.monotonic() > deadline:
            return outcome
        time.sleep(1.0)
