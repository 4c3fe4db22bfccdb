"""Uploads. The bytes stream from disk in chunks (never the whole file in memory) with a Content-Length, so a
server refuses an oversized file before reading it. Modules and state_dicts are saved to a temp file first.

A retry after a broken connection first looks for a version the lost attempt may have created (same sha256
among the model's newest versions), so retrying never makes a duplicate.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import httpx

from weightvault.checkpoint import save_temporary, training_checkpoint
from weightvault.errors import ConnectionFailed, NotFound, WeightvaultError
from weightvault.folders import FolderTar
from weightvault.progress import Reporter, Task
from weightvault.transport import Transport, check, json_object

UPLOAD_CHUNK_BYTES = 1024 * 1024
RETRIES = 2
RECENT_VERSIONS = 8  # how far back a retry looks for what a lost attempt created
# The answer comes after the server loaded, ran and stored the checkpoint: allow it time.
UPLOAD_TIMEOUT = httpx.Timeout(connect=10.0, write=300.0, read=3600.0, pool=60.0)
_RETRY_STATUSES = (502, 503, 504)


@dataclass(frozen=True)
class Upload:
    handle: IO[bytes]
    start: int
    size: int
    filename: str | None


@contextmanager
def open_source(source: Any, **training: Any) -> Iterator[Upload]:
    """An Upload from a path, a binary file object, an ``nn.Module`` or a state_dict.

    ``training`` (optimizer, scheduler, epoch, step) goes into the checkpoint saved for a module or state_dict.
    """
    if isinstance(source, str | os.PathLike):
        if any(value is not None for value in training.values()):
            raise TypeError("optimizer/scheduler/epoch/step go with a module or state_dict, not a file.")
        if os.path.isdir(source):
            folder = FolderTar(Path(source))
            yield Upload(cast(IO[bytes], folder), 0, folder.size, folder.name)
            return
        with open(source, "rb") as handle:
            yield Upload(handle, 0, os.fstat(handle.fileno()).st_size, os.path.basename(os.fspath(source)))
    elif hasattr(source, "read"):
        if any(value is not None for value in training.values()):
            raise TypeError("optimizer/scheduler/epoch/step go with a module or state_dict, not a file.")
        with _seekable(source) as upload:
            yield upload
    elif isinstance(source, Mapping) or _is_module(source):
        path = save_temporary(training_checkpoint(source, **training))
        try:
            with path.open("rb") as handle:
                yield Upload(handle, 0, os.fstat(handle.fileno()).st_size, "checkpoint.pt")
        finally:
            path.unlink(missing_ok=True)
    else:
        raise TypeError(
            f"push takes a path, a binary file, an nn.Module or a state_dict, not {type(source).__name__}."
        )


def _is_module(source: Any) -> bool:
    from torch import nn

    return isinstance(source, nn.Module)


@contextmanager
def _seekable(handle: IO[bytes]) -> Iterator[Upload]:
    name = getattr(handle, "name", None)
    filename = os.path.basename(name) if isinstance(name, str) else None
    if handle.seekable():
        start = handle.tell()
        size = handle.seek(0, io.SEEK_END) - start
        handle.seek(start)
        yield Upload(handle, start, size, filename)
        return
    # A pipe or socket: spool it to disk once, so the size is known and a retry can send it again.
    with tempfile.TemporaryFile() as spool:
        shutil.copyfileobj(handle, spool, UPLOAD_CHUNK_BYTES)
        size = spool.tell()
        spool.seek(0)
        yield Upload(spool, 0, size, filename)


def send(
    transport: Transport, *, model: str, upload: Upload, params: dict[str, Any], reporter: Reporter
) -> dict[str, Any]:
    """POST the file as the model's next version; the Version JSON."""
    path = f"/v1/models/{model}/versions"
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(upload.size)}
    if upload.filename:
        headers["X-Filename"] = upload.filename.encode("ascii", "ignore").decode() or "checkpoint"
    for attempt in range(RETRIES + 1):

        def post() -> httpx.Response:
            upload.handle.seek(upload.start)
            with reporter.task(f"push {upload.filename or model}", total=upload.size) as task:
                return transport.http.post(
                    path,
                    content=_chunks(upload, task),
                    headers=headers,
                    params=params,
                    timeout=UPLOAD_TIMEOUT,
                )

        try:
            response = transport.call(post)
        except ConnectionFailed as exc:
            never_sent = isinstance(exc.__cause__, httpx.ConnectError | httpx.ConnectTimeout)
            if never_sent or attempt == RETRIES:
                raise
            existing = _find_existing(transport, model, _sha256(upload))
            if existing is not None:
                return existing
            continue
        if response.status_code in _RETRY_STATUSES and attempt < RETRIES:
            time.sleep(1.0 + attempt)
            continue
        check(response)
        return json_object(response)
    raise AssertionError("unreachable")


def _chunks(upload: Upload, task: Task) -> Iterator[bytes]:
    remaining = upload.size
    while remaining:
        chunk = upload.handle.read(min(UPLOAD_CHUNK_BYTES, remaining))
        if not chunk:
            raise WeightvaultError(f"{upload.filename or 'The file'} shrank while it was being uploaded.")
        remaining -= len(chunk)
        task.advance(len(chunk))
        yield chunk
    # The bytes are sent; the server now reads, loads, writes and proves them before it answers.
    task.describe(
        f"{upload.filename or 'checkpoint'} sent; server is validating (reading, loading into the "
        "architecture, writing and proving each artifact)"
    )


def _sha256(upload: Upload) -> str:
    digest = hashlib.sha256()
    upload.handle.seek(upload.start)
    remaining = upload.size
    while remaining:
        chunk = upload.handle.read(min(UPLOAD_CHUNK_BYTES, remaining))
        if not chunk:
            break
        digest.update(chunk)
        remaining -= len(chunk)
    return digest.hexdigest()


def _find_existing(transport: Transport, model: str, sha256: str) -> dict[str, Any] | None:
    latest = transport.json("GET", f"/v1/models/{model}").get("latest_version")
    if not isinstance(latest, int):
        return None
    for number in range(latest, max(latest - RECENT_VERSIONS, 0), -1):
        try:
            version = transport.json("GET", f"/v1/models/{model}/versions/{number}")
        except NotFound:
            continue
        source = version.get("source")
        if isinstance(source, dict) and source.get("sha256") == sha256:
            return version
    return None
