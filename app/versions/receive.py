"""Stream an upload (raw body or multipart) to a staging file, hashing as it arrives.

Bytes are batched and written from a worker thread, so the event loop never blocks on disk and
memory holds at most one batch, whatever the file size. Multipart bodies are parsed incrementally:
the file part goes straight to disk, never through a spooled temporary copy.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import anyio.to_thread
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from app.checkpoints.folder import check_file_name
from app.errors import (
    InvalidMetadata,
    InvalidRequest,
    LimitExceeded,
    TooLarge,
    UnreadableCheckpoint,
    UploadTimeout,
)
from app.versions.service import ReceivedUpload

BATCH_BYTES = 8 * 1024 * 1024
MULTIPART_OVERHEAD = 1024 * 1024  # boundaries, part headers and a metadata field on top of the file
FILE_FIELD = "file"
METADATA_FIELD = "metadata"
MAX_FILENAME_CHARS = 255


@dataclass(frozen=True)
class UploadLimits:
    max_upload_bytes: int
    max_metadata_bytes: int
    idle_timeout_seconds: float = 60.0
    max_form_parts: int = 256
    deadline_base_seconds: float = 300.0
    min_bytes_per_second: float = 64 * 1024


async def body_chunks(request: Request, limits: UploadLimits) -> AsyncIterator[bytes]:
    """The body's chunks. A client that sends nothing for the idle timeout is dropped, and so is one
    slower than the minimum rate once the base allowance is spent: a steady drip never goes idle, and
    either would otherwise hold a connection and a staging file as long as it likes."""
    stream = request.stream().__aiter__()
    started = time.monotonic()
    received = 0
    while True:
        # The allowance grows with the bytes received, so the average rate counts, not each chunk's.
        deadline = started + limits.deadline_base_seconds + received / limits.min_bytes_per_second
        left = deadline - time.monotonic()
        if left <= 0:
            raise _too_slow(limits, received, time.monotonic() - started)
        wait = min(limits.idle_timeout_seconds, left)
        try:
            with anyio.fail_after(wait):
                chunk = await stream.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError:
            if wait < limits.idle_timeout_seconds:
                raise _too_slow(limits, received, time.monotonic() - started) from None
            raise UploadTimeout(
                f"The upload stalled: no bytes for {limits.idle_timeout_seconds:g} s "
                "(WEIGHTVAULT_UPLOAD_IDLE_TIMEOUT_SECONDS); nothing was kept, send it again.",
                {"limit": "upload_idle_timeout_seconds", "value": limits.idle_timeout_seconds},
            ) from None
        received += len(chunk)
        yield chunk


def _too_slow(limits: UploadLimits, received: int, elapsed: float) -> UploadTimeout:
    return UploadTimeout(
        f"The upload was too slow: {received} bytes in {elapsed:.1f} s. This server allows "
        f"{limits.deadline_base_seconds:g} s plus one second per {limits.min_bytes_per_second:g} bytes "
        "(WEIGHTVAULT_UPLOAD_DEADLINE_BASE_SECONDS, WEIGHTVAULT_UPLOAD_MIN_BYTES_PER_SECOND); "
        "nothing was kept, send it again.",
        {
            "limit": "upload_min_bytes_per_second",
            "value": limits.min_bytes_per_second,
            "base_seconds": limits.deadline_base_seconds,
            "received": received,
        },
    )


class _HashingWriter:
    """Appends to a file and a sha256 in batches handed to a worker thread."""

    def __init__(self, handle: BinaryIO, limit: int) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()
        self.size = 0
        self.limit = limit
        self.pending = bytearray()

    def add(self, data: bytes | bytearray | memoryview) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise TooLarge(
                f"The file is larger than this server's limit of {self.limit} bytes (WEIGHTVAULT_MAX_UPLOAD_BYTES).",
                {"limit": self.limit},
            )
        self.pending += data

    async def flush(self, force: bool = False) -> None:
        if self.pending and (force or len(self.pending) >= BATCH_BYTES):
            batch, self.pending = self.pending, bytearray()
            await anyio.to_thread.run_sync(self._write, batch)

    def _write(self, batch: bytearray) -> None:
        self.digest.update(batch)
        self.handle.write(batch)


def clean_filename(raw: str | None) -> str | None:
    """The client's file name as metadata: last path component, no control characters, bounded length."""
    if not raw:
        return None
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())
    return name[:MAX_FILENAME_CHARS] or None


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a finite number")
    return value


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def parse_metadata(raw: str | bytes | None, limit: int) -> dict[str, Any]:
    """A JSON object within ``limit`` bytes that can be stored and echoed back exactly (strict JSON)."""
    if raw is None or raw == "" or raw == b"":
        return {}
    if len(raw) > limit:
        raise InvalidMetadata(f"metadata is {len(raw)} bytes; the limit is {limit}.", {"limit": limit})
    try:
        value = json.loads(raw, parse_float=_finite_float, parse_constant=_refuse_constant)
        # Lone surrogates parse but cannot be stored or sent back as UTF-8.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeError, RecursionError):
        raise InvalidMetadata(
            'metadata must be a JSON object, e.g. {"tags": ["baseline"], "metrics": {"acc": 0.98}} '
            "(strict JSON: no NaN or Infinity, valid UTF-8, not nested too deeply)."
        ) from None
    if not isinstance(value, dict):
        raise InvalidMetadata(f"metadata must be a JSON object, not a {type(value).__name__}.")
    return value


def _check_declared_length(request: Request, allowed: int) -> None:
    declared = request.headers.get("content-length")
    if declared is None:
        return
    try:
        length = int(declared)
    except ValueError:
        raise InvalidRequest("The Content-Length header is not a number.") from None
    if length > allowed:
        raise TooLarge(
            f"The upload declares {length} bytes; this server accepts files up to {allowed} bytes "
            "(WEIGHTVAULT_MAX_UPLOAD_BYTES).",
            {"limit": allowed, "declared": length},
        )


async def receive_upload(
    request: Request, *, dest: Path, limits: UploadLimits, metadata_param: str | None
) -> tuple[ReceivedUpload, dict[str, Any]]:
    """Write the uploaded file to ``dest``; returns it with the user metadata (query or form field)."""
    content_type = request.headers.get("content-type", "")
    if content_type.lower().startswith("multipart/form-data"):
        _check_declared_length(request, limits.max_upload_bytes + MULTIPART_OVERHEAD)
        received, form_metadata = await _receive_multipart(request, dest, limits, content_type)
        if form_metadata is not None and metadata_param is not None:
            raise InvalidMetadata("metadata was given twice (query parameter and form field); send it once.")
        return received, parse_metadata(
            form_metadata if form_metadata is not None else metadata_param, limits.max_metadata_bytes
        )
    # Parse metadata first: a bad one is refused before any byte of the file is read.
    metadata = parse_metadata(metadata_param, limits.max_metadata_bytes)
    _check_declared_length(request, limits.max_upload_bytes)
    return await _receive_raw(request, dest, limits), metadata


async def _receive_raw(request: Request, dest: Path, limits: UploadLimits) -> ReceivedUpload:
    with dest.open("wb") as handle:
        writer = _HashingWriter(handle, limits.max_upload_bytes)
        async for chunk in body_chunks(request, limits):
            writer.add(chunk)
            await writer.flush()
        await writer.flush(force=True)
    _refuse_empty(writer)
    return ReceivedUpload(
        path=dest,
        size=writer.size,
        sha256=writer.digest.hexdigest(),
        filename=clean_filename(request.headers.get("x-filename")),
    )


def _refuse_empty(writer: _HashingWriter) -> None:
    if writer.size == 0:
        raise UnreadableCheckpoint("The upload is empty; send the bytes of a file written by torch.save.")


@dataclass
class _FilePart:
    name: str | None
    path: Path
    handle: BinaryIO
    writer: _HashingWriter
    finished: bool = False


@dataclass
class _MultipartState:
    """python-multipart's callbacks: every ``file`` part to its own staging file, the metadata field kept."""

    parts_dir: Path
    upload_limit: int
    metadata_limit: int
    max_parts: int
    parts: int = 0
    header_field: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    headers: dict[bytes, bytes] = field(default_factory=dict)
    current: str | None = None
    files: list[_FilePart] = field(default_factory=list)
    metadata: bytearray | None = None
    other_bytes: int = 0
    ended: bool = False

    def on_end(self) -> None:
        self.ended = True
        self._finish_file()

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > self.max_parts:
            raise LimitExceeded(
                f"The form has more than {self.max_parts} parts (WEIGHTVAULT_MAX_FORM_PARTS).",
                {"limit": "max_form_parts", "value": self.max_parts},
            )
        self._finish_file()
        self.headers = {}
        self.current = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[bytes(self.header_field).lower()] = bytes(self.header_value)
        self.header_field.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        _kind, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        self.current = name
        if name == FILE_FIELD:
            # Each file may use what the ones before it left of the upload limit.
            used = sum(part.writer.size for part in self.files)
            path = self.parts_dir / f"{len(self.files):04d}"
            handle = path.open("xb")
            self.files.append(
                _FilePart(
                    name=clean_filename(options.get(b"filename", b"").decode("utf-8", "replace")),
                    path=path,
                    handle=handle,
                    writer=_HashingWriter(handle, self.upload_limit - used),
                )
            )
        elif name == METADATA_FIELD:
            self.metadata = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.current == FILE_FIELD:
            self.files[-1].writer.add(memoryview(data)[start:end])
        elif self.current == METADATA_FIELD and self.metadata is not None:
            self.metadata += data[start:end]
            if len(self.metadata) > self.metadata_limit:
                raise InvalidMetadata(
                    f"metadata is over {self.metadata_limit} bytes; the limit is {self.metadata_limit}.",
                    {"limit": self.metadata_limit},
                )
        else:
            # Fields other than file and metadata are ignored, but not read without bound.
            self.other_bytes += end - start
            if self.other_bytes > self.metadata_limit:
                raise LimitExceeded(
                    f"The form's fields other than 'file' and 'metadata' exceed {self.metadata_limit} bytes.",
                    {"limit": "max_metadata_bytes", "value": self.metadata_limit},
                )

    def _finish_file(self) -> None:
        if self.current == FILE_FIELD and self.files:
            self.files[-1].finished = True

    async def flush(self) -> None:
        """Write what arrived; a finished file is written out and closed (few handles stay open)."""
        for part in self.files:
            if part.handle.closed:
                continue
            await part.writer.flush(force=part.finished)
            if part.finished:
                part.handle.close()

    def close(self) -> None:
        for part in self.files:
            part.handle.close()


async def _receive_multipart(
    request: Request, dest: Path, limits: UploadLimits, content_type: str
) -> tuple[ReceivedUpload, bytes | None]:
    _kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise InvalidRequest("The multipart body has no boundary in its Content-Type header.")
    parts_dir = dest.with_name(dest.name + ".parts")
    parts_dir.mkdir()
    state = _MultipartState(
        parts_dir=parts_dir,
        upload_limit=limits.max_upload_bytes,
        metadata_limit=limits.max_metadata_bytes,
        max_parts=limits.max_form_parts,
    )
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": state.on_part_begin,
            "on_header_field": state.on_header_field,
            "on_header_value": state.on_header_value,
            "on_header_end": state.on_header_end,
            "on_headers_finished": state.on_headers_finished,
            "on_part_data": state.on_part_data,
            "on_end": state.on_end,
        },
        max_header_count=16,
    )
    try:
        async for chunk in body_chunks(request, limits):
            parser.write(chunk)
            await state.flush()
        parser.finalize()
        await state.flush()
    except MultipartParseError as exc:
        raise InvalidRequest(f"The multipart body is malformed: {exc}.") from None
    finally:
        state.close()
    if not state.ended:
        # python-multipart's finalize() does not check this: a cut-off body would pass as a shorter file.
        raise UnreadableCheckpoint(
            "The multipart body ended without its closing boundary (--<boundary>--): the upload is "
            "incomplete; nothing was kept, send it again."
        )
    if not state.files:
        raise InvalidRequest("The form has no 'file' field; send the checkpoint as multipart field 'file'.")
    metadata = bytes(state.metadata) if state.metadata is not None else None
    if len(state.files) == 1:
        part = state.files[0]
        _refuse_empty(part.writer)
        part.path.rename(dest)
        received = ReceivedUpload(
            path=dest, size=part.writer.size, sha256=part.writer.digest.hexdigest(), filename=part.name
        )
        return received, metadata
    return _folder_of_parts(state.files, dest), metadata


def _folder_of_parts(files: list[_FilePart], dest: Path) -> ReceivedUpload:
    """Several ``file`` parts are the files of one model folder, each named by its file name."""
    dest.mkdir()
    lines = []
    for part in files:
        if part.name is None:
            raise InvalidRequest(
                "A form with several 'file' parts is a model folder: give each part its file name "
                "(curl -F 'file=@config.json' -F 'file=@model.safetensors')."
            )
        name = check_file_name(part.name)
        target = dest / name
        if target.exists():
            raise InvalidRequest(f"The form sends the file '{name}' twice.", {"file": name})
        part.path.rename(target)
        lines.append(f"{name} {part.writer.digest.hexdigest()}\n")
    return ReceivedUpload(
        path=dest,
        size=sum(part.writer.size for part in files),
        sha256=hashlib.sha256("".join(sorted(lines)).encode()).hexdigest(),
        filename=None,
    )
