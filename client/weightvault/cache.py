"""The local download cache, keyed by sha256 (the layout of huggingface_hub's, flattened).

    <root>/blobs/<sha256>              verified files, read-only
    <root>/blobs/<sha256>.origin       beside a file checked only by its server's CRC-32 (its sha256 was
                                       not computed): that server's URL
    <root>/blobs/<sha256>.incomplete   a download in progress or interrupted (resumed with Range)
    <root>/blobs/<sha256>.lock         held while one process writes that blob
    <root>/refs/<key>.json             what a (server, model, ref, kind, format) answered last:
                                       {"sha256", "filename", "size"}; sent back as If-None-Match

The root is $WEIGHTVAULT_CACHE, else $XDG_CACHE_HOME/weightvault, else ~/.cache/weightvault.

Blobs are shared by every server the cache has pulled from, by their sha256. A file checked only by a
CRC-32 (which anyone can forge) carries its sha256 on its server's word, so it answers only pulls from
that server with the CRC check; any other pull hashes it first, and drops it (with anything unpacked
from it) if the hash is not its name. Every change to a blob, its marker or what was unpacked from it
happens under the blob's lock (no lock on Windows, which has no flock: there two processes racing on one
blob may leave a CRC-checked file without its marker).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent pulls of one blob may both download it
    fcntl = None  # type: ignore[assignment]

SHA256 = re.compile(r"^[0-9a-f]{64}$")
COPY_CHUNK_BYTES = 4 * 1024 * 1024


def default_cache_dir() -> Path:
    if explicit := os.environ.get("WEIGHTVAULT_CACHE"):
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "weightvault"


def check_sha256(value: str) -> str:
    if not SHA256.fullmatch(value):
        raise ValueError(f"{value[:80]!r} is not a sha256 hex digest")
    return value


@dataclass(frozen=True)
class RefEntry:
    sha256: str
    filename: str | None
    size: int | None


class Cache:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.refs = root / "refs"

    @staticmethod
    def key(*parts: str) -> str:
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def blob(self, sha256: str) -> Path:
        return self.blobs / check_sha256(sha256)

    def partial(self, sha256: str) -> Path:
        return self.blobs / f"{check_sha256(sha256)}.incomplete"

    def has_blob(self, sha256: str) -> bool:
        return self.blob(sha256).is_file()

    def partial_size(self, sha256: str) -> int:
        try:
            return self.partial(sha256).stat().st_size
        except FileNotFoundError:
            return 0

    def discard_partial(self, sha256: str) -> None:
        self.partial(sha256).unlink(missing_ok=True)

    def origin_marker(self, sha256: str) -> Path:
        return self.blobs / f"{check_sha256(sha256)}.origin"

    def commit(self, sha256: str, *, crc_checked_from: str | None = None) -> Path:
        """Make the verified partial download the blob (with its lock held). ``crc_checked_from``: the
        server whose CRC-32 was the only check; recorded on disk before the blob appears, so other
        servers' pulls hash it first."""
        blob = self.blob(sha256)
        partial = self.partial(sha256)
        marker = self.origin_marker(sha256)
        if crc_checked_from is None:
            marker.unlink(missing_ok=True)
        else:
            _write_atomically(marker, crc_checked_from.encode(), durable=True)
        # Anything unpacked from an earlier file of this name (pruned since) is not this file's.
        shutil.rmtree(self.extracted(sha256), ignore_errors=True)
        partial.chmod(0o444)
        os.replace(partial, blob)
        return blob

    def extracted(self, sha256: str) -> Path:
        """Where an ONNX bundle blob is unpacked (``weightvault.bundles``)."""
        return self.root / "extracted" / check_sha256(sha256)

    def usable_blob(self, sha256: str, *, origin: str, verify: str) -> bool:
        """Whether the cached blob may answer a pull from ``origin`` that checks by ``verify`` (call with
        the blob's lock held): a blob whose sha256 was checked always may; one checked only by
        ``origin``'s CRC-32 may answer that server's CRC-checked pulls. Any other is hashed now: kept (as
        sha256-checked) if it hashes to its name, else dropped, with anything unpacked from it, so the
        pull downloads it again."""
        if not self.has_blob(sha256):
            return False
        try:
            recorded = self.origin_marker(sha256).read_text()
        except FileNotFoundError:
            return True
        if verify == "crc32" and recorded == origin:
            return True
        if _sha256_file(self.blob(sha256)) == sha256:
            self.origin_marker(sha256).unlink(missing_ok=True)
            return True
        self.discard_blob(sha256)
        return False

    def discard_blob(self, sha256: str) -> None:
        """Remove a blob, its marker and what was unpacked from it (with its lock held)."""
        with contextlib.suppress(FileNotFoundError):
            _unlink_read_only(self.blob(sha256))
        self.origin_marker(sha256).unlink(missing_ok=True)
        shutil.rmtree(self.extracted(sha256), ignore_errors=True)

    @contextlib.contextmanager
    def lock(self, sha256: str) -> Iterator[None]:
        """Held while writing one blob, so two processes never append to the same partial file."""
        self.blobs.mkdir(parents=True, exist_ok=True)
        with (self.blobs / f"{check_sha256(sha256)}.lock").open("a") as handle:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def read_ref(self, key: str) -> RefEntry | None:
        try:
            data = json.loads((self.refs / f"{key}.json").read_text())
            entry = RefEntry(
                sha256=check_sha256(data["sha256"]), filename=data.get("filename"), size=data.get("size")
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return entry

    def write_ref(self, key: str, entry: RefEntry) -> None:
        self.refs.mkdir(parents=True, exist_ok=True)
        _write_atomically(self.refs / f"{key}.json", json.dumps(asdict(entry)).encode())

    def entries(self) -> list[CachedBlob]:
        """Every verified file and interrupted download, newest use first."""
        found: list[CachedBlob] = []
        if self.blobs.is_dir():
            for path in self.blobs.iterdir():
                name, _, suffix = path.name.partition(".")
                if not SHA256.fullmatch(name) or suffix not in ("", "incomplete"):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    stat = path.stat()
                    found.append(CachedBlob(name, stat.st_size, stat.st_mtime, complete=suffix == ""))
        return sorted(found, key=lambda blob: blob.used, reverse=True)

    def prune(self, *, unused_for_seconds: float = 0.0, now: float | None = None) -> list[CachedBlob]:
        """Remove files not used for that long (and their refs); what was removed."""
        cutoff = (time.time() if now is None else now) - unused_for_seconds
        removed = [blob for blob in self.entries() if blob.used <= cutoff]
        gone = {blob.sha256 for blob in removed if blob.complete}
        for blob in removed:
            if blob.complete:
                with self.lock(blob.sha256):
                    self.discard_blob(blob.sha256)
                continue
            with contextlib.suppress(FileNotFoundError):
                self.partial(blob.sha256).unlink()
        if gone and self.refs.is_dir():
            for ref in self.refs.glob("*.json"):
                entry = self.read_ref(ref.stem)
                if entry is not None and entry.sha256 in gone:
                    with contextlib.suppress(FileNotFoundError):
                        ref.unlink()
        return removed


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(COPY_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomically(path: Path, data: bytes, *, durable: bool = False) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable and hasattr(os, "O_DIRECTORY"):  # the rename itself on disk (POSIX; Windows has no such call)
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def _unlink_read_only(path: Path) -> None:
    try:
        path.unlink()
    except PermissionError:  # Windows refuses to delete a read-only file; POSIX only asks the folder
        path.chmod(0o644)
        path.unlink()


def place(blob: Path, dest: Path) -> Path:
    """Put a cached blob at ``dest`` through a temp name in the same folder, so ``dest`` is whole or absent.

    A hard link when the cache is on the same filesystem (the file is then stored once; both names are
    read-only, as cached files are), else a copy.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{secrets.token_hex(6)}.tmp"
    try:
        try:
            os.link(blob, tmp)
        except OSError:
            # "xb" creates the file with the usual permissions (umask), unlike mkstemp's 0600.
            with blob.open("rb") as source, tmp.open("xb") as target:
                shutil.copyfileobj(source, target, COPY_CHUNK_BYTES)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


@dataclass(frozen=True)
class CachedBlob:
    sha256: str
    size: int
    used: float  # mtime: set when it was downloaded or last served from the cache
    complete: bool
