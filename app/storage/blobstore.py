"""A content-addressed file store: ``blobs/sha256/ab/abcdef...``.

Writes are register-or-rollback: bytes go to a private staging area on the same filesystem,
are fsynced, then renamed into place; identical content is stored once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from app.storage.crc32 import crc32

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
HASH_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class StoredBlob:
    sha256: str
    size: int
    created: bool  # False when identical content was already stored
    mtime_ns: int = 0  # when created: the mtime a later claim would change


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_and_crc32_file(path: Path) -> tuple[str, int]:
    """A file's sha256 and CRC-32, read once (a whole-file artifact's ETag and X-Weightvault-Crc32)."""
    digest, crc = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
            crc = crc32(chunk, crc)
    return digest.hexdigest(), crc


def owner_is_alive(folder: Path) -> bool:
    """Whether the process that staged into ``folder`` still runs (it holds the folder's flock)."""
    lock = folder / ".lock"
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class BlobStore:
    """Files addressed by their sha256 under ``root/blobs``; staging under ``root/tmp``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs_dir = root / "blobs" / "sha256"
        self.tmp_dir = root / "tmp"
        self._own_tmp: Path | None = None
        self._lock_fd: int | None = None

    def initialise(self) -> None:
        """Create the directories, claim a private staging area, and drop what dead processes left behind.

        Each process stages under its own folder, holding an flock on it for its lifetime; a folder whose
        lock can be taken belongs to a process that died, so several servers can share one data dir.
        """
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp_dir.iterdir():
            if leftover.is_dir() and not leftover.is_symlink():
                if owner_is_alive(leftover):
                    continue
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        if self._own_tmp is None:
            own = self.tmp_dir / f"proc-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            own.mkdir()
            fd = os.open(own / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._own_tmp, self._lock_fd = own, fd

    def close(self) -> None:
        """Release this process's staging area (a crash leaves it for the next start-up to remove)."""
        if self._own_tmp is not None and self._lock_fd is not None:
            shutil.rmtree(self._own_tmp, ignore_errors=True)
            os.close(self._lock_fd)
            self._own_tmp, self._lock_fd = None, None

    def leftovers(self) -> list[Path]:
        """Staging folders and files of processes that are gone (removed at the next start-up)."""
        if not self.tmp_dir.is_dir():
            return []
        return [
            p for p in self.tmp_dir.iterdir() if p != self._own_tmp and not (p.is_dir() and owner_is_alive(p))
        ]

    @property
    def staging_root(self) -> Path:
        if self._own_tmp is None:
            self.initialise()
        assert self._own_tmp is not None
        return self._own_tmp

    def path_for(self, sha256: str) -> Path:
        if not _SHA256.match(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.blobs_dir / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A private directory for work in progress, removed with everything in it on exit."""
        path = self.staging_root / f"stage-{uuid.uuid4().hex}"
        path.mkdir(parents=True)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def put(self, staged: Path, sha256: str) -> StoredBlob:
        """Move a staged, already-hashed file into the store (fsync, rename, fsync dir).

        When the content is already stored, the existing copy is *claimed* by touching its mtime
        (``discard`` and ``gc`` leave recently touched blobs alone) and the staged copy is dropped.
        """
        target = self.path_for(sha256)
        size = staged.stat().st_size
        try:
            os.utime(target)
        except FileNotFoundError:
            pass
        else:
            staged.unlink(missing_ok=True)
            return StoredBlob(sha256=sha256, size=size, created=False)
        with staged.open("rb+") as handle:
            os.fsync(handle.fileno())
        if not target.parent.is_dir():
            target.parent.mkdir(parents=True, exist_ok=True)
            fsync_dir(target.parent.parent)
        os.replace(staged, target)
        fsync_dir(target.parent)
        return StoredBlob(sha256=sha256, size=size, created=True, mtime_ns=target.stat().st_mtime_ns)

    def claim(self, sha256: str) -> StoredBlob | None:
        """Claim a stored blob an upload is about to reference without staging it again (a tensor blob
        found in the store): touching its mtime keeps ``gc`` and ``release_blobs`` off it for their grace
        period. None when it is not stored (any more): the caller must store the bytes itself."""
        target = self.path_for(sha256)
        try:
            os.utime(target)
            size = target.stat().st_size
        except FileNotFoundError:
            return None
        return StoredBlob(sha256=sha256, size=size, created=False)

    def discard(self, blob: StoredBlob) -> None:
        """Undo a ``put`` that created ``blob`` (its row was never committed), unless another writer
        claimed the same content since; then the file stays."""
        if not blob.created:
            return
        target = self.path_for(blob.sha256)
        tomb = self.staging_root / f"discard-{uuid.uuid4().hex}"
        try:
            os.rename(target, tomb)
        except FileNotFoundError:
            return
        if tomb.stat().st_mtime_ns != blob.mtime_ns:
            os.replace(tomb, target)  # claimed meanwhile: identical bytes, put them back
        else:
            tomb.unlink()

    def remove(self, sha256: str) -> None:
        self.path_for(sha256).unlink(missing_ok=True)

    def open(self, sha256: str) -> BinaryIO:
        return self.path_for(sha256).open("rb")

    def iter_blobs(self) -> Iterator[tuple[str, Path]]:
        if not self.blobs_dir.is_dir():
            return
        for shard in sorted(self.blobs_dir.iterdir()):
            for blob in sorted(shard.iterdir()):
                yield blob.name, blob

    def usable(self) -> bool:
        """True when the store can be written (used by readiness checks)."""
        try:
            probe = self.staging_root / f"probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"ok")
            probe.unlink()
            return True
        except OSError:
            return False
