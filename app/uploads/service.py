"""Resumable uploads: sessions in the database, received bytes in ``<data dir>/uploads/<id>.part``.

The sha256 of the whole file is kept running while bytes arrive. hashlib's state cannot be saved, so a
process that has not seen an upload's earlier PATCHes (after a restart, or another API process) finishes
it by reading the received part once. When the last byte is in, the file goes through exactly the ingest
of a direct upload (``versions.service.create_version``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.base import utcnow
from app.db.engine import begin_write
from app.errors import TooLarge, WeightvaultError
from app.models.models import RegisteredModel
from app.uploads.errors import (
    ChecksumMismatch,
    OffsetMismatch,
    TooManyUploads,
    UploadBusy,
    UploadExpired,
    UploadFinished,
    UploadNotFound,
)
from app.uploads.models import UploadSession

_READ_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class SessionRules:
    max_upload_bytes: int
    ttl_seconds: float
    max_open_per_owner: int


def part_path(data_dir: Path, upload_id: str) -> Path:
    return data_dir / "uploads" / f"{upload_id}.part"


def create_session(
    *,
    session: Session,
    data_dir: Path,
    rules: SessionRules,
    model: RegisteredModel,
    owner: str,
    length: int,
    filename: str | None,
    metadata: dict[str, Any],
) -> UploadSession:
    if length > rules.max_upload_bytes:
        raise TooLarge(
            f"Upload-Length is {length} bytes; this server accepts files up to {rules.max_upload_bytes} bytes.",
            {"limit": rules.max_upload_bytes},
        )
    begin_write(session)  # counts, then inserts: see record_offset
    now = utcnow()
    open_sessions = session.scalar(
        select(func.count())
        .select_from(UploadSession)
        .where(
            UploadSession.owner == owner,
            UploadSession.state == "receiving",
            UploadSession.expires_at > now,
        )
    )
    if (open_sessions or 0) >= rules.max_open_per_owner:
        raise TooManyUploads(
            f"You have {open_sessions} unfinished resumable uploads; finish or DELETE one first "
            f"(at most {rules.max_open_per_owner}).",
            {"limit": rules.max_open_per_owner},
        )
    row = UploadSession(
        id=uuid.uuid4().hex,
        model_id=model.id,
        owner=owner,
        length=length,
        offset=0,
        filename=filename,
        user_metadata=metadata,
        state="receiving",
        created_at=now,
        updated_at=now,
        expires_at=now + timedelta(seconds=rules.ttl_seconds),
    )
    path = part_path(data_dir, row.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    session.add(row)
    session.commit()
    return row


def get_session(*, session: Session, data_dir: Path, upload_id: str) -> UploadSession:
    """The upload, or 404; an unfinished one past its expiry is removed and answered 410."""
    row = session.get(UploadSession, upload_id) if len(upload_id) <= 32 else None
    if row is None:
        raise UploadNotFound(f"There is no upload '{upload_id[:40]}'; start one with POST .../uploads.")
    if row.state == "receiving" and row.expires_at <= utcnow():
        expired_at = row.expires_at.isoformat()
        discard(session=session, data_dir=data_dir, row=row)
        raise UploadExpired(
            f"The upload '{upload_id}' expired at {expired_at}; its bytes were freed. Start again."
        )
    return row


def discard(*, session: Session, data_dir: Path, row: UploadSession) -> None:
    upload_id = row.id
    begin_write(session)  # the row was read first: see record_offset
    with contextlib.suppress(FileNotFoundError):
        part_path(data_dir, upload_id).unlink()
    _HASHES.forget(upload_id)
    current = session.get(UploadSession, upload_id)
    if current is not None:  # else another request removed it meanwhile
        session.delete(current)
    session.commit()


def remove_expired(*, session: Session, data_dir: Path) -> int:
    """Free the bytes of unfinished uploads past their expiry (``gc`` calls this)."""
    rows = session.scalars(
        select(UploadSession).where(UploadSession.state == "receiving", UploadSession.expires_at <= utcnow())
    ).all()
    for row in rows:
        discard(session=session, data_dir=data_dir, row=row)
    return len(rows)


class _RunningHashes:
    """Per-process running sha256 of each upload, with the offset it covers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hashes: dict[str, tuple[Any, int]] = {}

    def take(self, upload_id: str, path: Path, offset: int) -> Any:
        with self._lock:
            found = self._hashes.pop(upload_id, None)
        if found is not None and found[1] == offset:
            return found[0]
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            remaining = offset
            while remaining:
                chunk = handle.read(min(_READ_BYTES, remaining))
                if not chunk:
                    break
                digest.update(chunk)
                remaining -= len(chunk)
        return digest

    def keep(self, upload_id: str, digest: Any, offset: int) -> None:
        with self._lock:
            self._hashes[upload_id] = (digest, offset)

    def forget(self, upload_id: str) -> None:
        with self._lock:
            self._hashes.pop(upload_id, None)


_HASHES = _RunningHashes()


@dataclass
class Appender:
    """One PATCH: bytes appended at the session's offset, hashed as they arrive.

    Only one PATCH of an upload runs at a time (an exclusive lock on the part file, across processes).
    Bytes past the last acknowledged offset (from a PATCH cut off by a crash) are dropped first.
    """

    upload_id: str
    path: Path
    start: int
    length: int
    # (algorithm, digest) from Upload-Checksum, for this PATCH's bytes alone
    expected_chunk: tuple[str, bytes] | None
    written: int = 0
    _handle: IO[bytes] | None = field(default=None, repr=False)
    _digest: Any = field(default=None, repr=False)
    _before: Any = field(default=None, repr=False)
    _chunk_digest: Any = field(default=None, repr=False)

    def open(self) -> None:
        handle = self.path.open("r+b")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise UploadBusy(
                "Another PATCH of this upload is still running; wait for it (or HEAD for the offset) and retry."
            ) from None
        handle.truncate(self.start)
        handle.seek(self.start)
        self._handle = handle
        self._digest = _HASHES.take(self.upload_id, self.path, self.start)
        self._before = self._digest.copy()
        self._chunk_digest = hashlib.new(self.expected_chunk[0]) if self.expected_chunk is not None else None

    def write(self, data: bytes) -> None:
        assert self._handle is not None
        if self.start + self.written + len(data) > self.length:
            raise TooLarge(
                f"The PATCH sends more than the {self.length} bytes declared in Upload-Length.",
                {"upload_length": self.length},
            )
        self._handle.write(data)
        self._digest.update(data)
        if self._chunk_digest is not None:
            self._chunk_digest.update(data)
        self.written += len(data)

    def commit(self, *, complete_body: bool) -> int:
        """Make the received bytes durable and return the new offset.

        A body cut short keeps what arrived, unless the client asked for a checksum: those bytes
        cannot be verified and are dropped, as the tus checksum extension says.
        """
        assert self._handle is not None
        if self._chunk_digest is not None and (
            not complete_body
            or self.expected_chunk is None
            or self._chunk_digest.digest() != self.expected_chunk[1]
        ):
            self._rewind()
            if complete_body:
                raise ChecksumMismatch(
                    "The PATCH body does not match its Upload-Checksum; its bytes were dropped. Send them again."
                )
            return self.start
        self._handle.flush()
        os.fsync(self._handle.fileno())
        offset = self.start + self.written
        _HASHES.keep(self.upload_id, self._digest, offset)
        return offset

    def rewind(self) -> None:
        if self._handle is not None:
            self._rewind()

    def _rewind(self) -> None:
        assert self._handle is not None
        self._handle.truncate(self.start)
        self.written = 0
        _HASHES.keep(self.upload_id, self._before, self.start)

    def sha256(self) -> str:
        return str(self._digest.hexdigest())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()  # releases the lock
            self._handle = None


def begin_patch(
    row: UploadSession, *, data_dir: Path, offset: int, checksum: tuple[str, bytes] | None
) -> Appender:
    if row.state != "receiving":
        raise UploadFinished(
            f"The upload is {row.state}; GET /v1/uploads/{row.id} for its outcome.", {"state": row.state}
        )
    if offset != row.offset:
        raise OffsetMismatch(
            f"Upload-Offset is {offset} but the server has {row.offset} bytes; HEAD the upload and resume from there.",
            {"offset": row.offset},
        )
    appender = Appender(
        upload_id=row.id,
        path=part_path(data_dir, row.id),
        start=row.offset,
        length=row.length,
        expected_chunk=checksum,
    )
    appender.open()
    return appender


def record_offset(*, session: Session, upload_id: str, offset: int) -> UploadSession:
    # A writer from its first statement: on SQLite a transaction that read first and writes later fails
    # at once (SQLITE_BUSY, no wait) when another connection committed in between.
    begin_write(session)
    row = session.get(UploadSession, upload_id)
    if row is None:  # deleted while the PATCH ran
        raise UploadNotFound(f"The upload '{upload_id}' was deleted.")
    row.offset = offset
    row.updated_at = utcnow()
    if offset == row.length:
        row.state = "ingesting"
    session.commit()
    return row


def record_outcome(
    *, session: Session, upload_id: str, version_number: int | None, error: WeightvaultError | None
) -> UploadSession:
    begin_write(session)  # see record_offset
    row = session.get(UploadSession, upload_id)
    if row is None:
        raise UploadNotFound(f"The upload '{upload_id}' was deleted.")
    row.state = "done" if error is None else "failed"
    row.version_number = version_number
    row.error = None if error is None else error.body()["error"]
    row.updated_at = utcnow()
    session.commit()
    return row


@contextlib.contextmanager
def received_file(data_dir: Path, upload_id: str, workdir: Path) -> Iterator[Path]:
    """Move the complete part into the staging ``workdir`` (same filesystem: a rename) for ingest."""
    target = workdir / "upload"
    os.replace(part_path(data_dir, upload_id), target)
    _HASHES.forget(upload_id)
    yield target
