"""Downloads into the cache: stream to ``<sha256>.incomplete``, resume it with ``Range``, verify the sha256
against the ETag, then rename it into place. A cached blob is revalidated with ``If-None-Match``, so a second
pull of the same artifact transfers nothing (304)."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from weightvault.cache import SHA256, Cache, RefEntry
from weightvault.errors import ChecksumMismatch, UnexpectedResponse
from weightvault.progress import Reporter
from weightvault.transport import Transport, check

if TYPE_CHECKING:
    from _hashlib import HASH

DOWNLOAD_CHUNK_BYTES = 1024 * 1024
ATTEMPTS = 3
_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
_DISPOSITION_FILENAME = re.compile(r'filename="([^"]*)"')
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


@dataclass(frozen=True)
class Pulled:
    """A verified artifact."""

    path: Path  # where pull placed it, else the cached blob (read it, do not modify it)
    sha256: str
    size: int
    filename: str | None  # the server's name for it (Content-Disposition)
    from_cache: bool  # no body was transferred (304, or the same bytes were cached under another ref)
    resumed_from: int  # bytes of an earlier interrupted download reused through Range
    transferred: int  # body bytes received this time


def fetch(
    transport: Transport,
    path: str,
    *,
    params: dict[str, Any],
    cache: Cache,
    key: str,
    reporter: Reporter,
) -> Pulled:
    """Download ``path`` into the cache (or revalidate the cached copy) and return the verified blob."""
    for _ in range(ATTEMPTS):
        known = cache.read_ref(key)
        with transport.stream(
            "GET", path, params=params, headers=_conditional_headers(cache, known)
        ) as response:
            if response.status_code == 304:
                if known is not None and cache.has_blob(known.sha256):
                    return _cached(cache, known)
                continue  # the blob vanished after the request was sent
            if response.status_code == 416 and known is not None:
                cache.discard_partial(known.sha256)  # the partial file is not a prefix of this artifact
                continue
            check(response)
            entry = RefEntry(_etag_sha256(response), _filename(response), _total_size(response))
            # Recorded before the body arrives, so an interrupted download is resumed next time.
            cache.write_ref(key, entry)
            fetched = _receive(response, cache, entry, reporter)
            if fetched is not None:
                return fetched
    raise UnexpectedResponse(f"Downloading {path} did not settle after {ATTEMPTS} attempts.")


def _conditional_headers(cache: Cache, known: RefEntry | None) -> dict[str, str]:
    # The exact bytes: sizes, ranges and the sha256 are all about the file, not a compressed encoding of it.
    headers = {"Accept-Encoding": "identity"}
    if known is None:
        return headers
    etag = f'"{known.sha256}"'
    if cache.has_blob(known.sha256):
        return {**headers, "If-None-Match": etag}
    offset = cache.partial_size(known.sha256)
    if offset:
        # If-Range: the server sends the whole file (200) instead if the artifact is no longer that one.
        return {**headers, "Range": f"bytes={offset}-", "If-Range": etag}
    return headers


def _cached(cache: Cache, entry: RefEntry) -> Pulled:
    blob = cache.blob(entry.sha256)
    return Pulled(blob, entry.sha256, blob.stat().st_size, entry.filename, True, 0, 0)


def _receive(response: httpx.Response, cache: Cache, entry: RefEntry, reporter: Reporter) -> Pulled | None:
    """Stream the body after what the partial file holds; None when the attempt must start over."""
    sha256 = entry.sha256
    if cache.has_blob(sha256):
        return _cached(cache, entry)
    with cache.lock(sha256):
        if cache.has_blob(sha256):  # another process finished it while we waited
            return _cached(cache, entry)
        offset = 0
        digest = hashlib.sha256()
        if response.status_code == 206:
            offset = cache.partial_size(sha256)
            if _range_start(response) != offset:
                cache.discard_partial(sha256)
                return None
            _hash_prefix(cache.partial(sha256), offset, digest)
        elif response.status_code != 200:
            raise UnexpectedResponse(f"A download answered {response.status_code}, not 200 or 206.")
        transferred = 0
        description = entry.filename or sha256[:12]
        with (
            cache.partial(sha256).open("ab" if offset else "wb") as handle,
            reporter.task(description, total=entry.size, completed=offset) as task,
        ):
            for chunk in response.iter_bytes(DOWNLOAD_CHUNK_BYTES):
                handle.write(chunk)
                digest.update(chunk)
                transferred += len(chunk)
                task.advance(len(chunk))
            handle.flush()
            os.fsync(handle.fileno())
        size = offset + transferred
        actual = digest.hexdigest()
        if actual != sha256 or (entry.size is not None and size != entry.size):
            cache.discard_partial(sha256)
            raise ChecksumMismatch(
                f"The downloaded file ({size} bytes) has sha256 {actual}, not the server's {sha256}; "
                "it was discarded, try again.",
                expected=sha256,
                actual=actual,
            )
        blob = cache.commit(sha256)
    return Pulled(blob, sha256, size, entry.filename, False, offset, transferred)


def _hash_prefix(path: Path, length: int, digest: HASH) -> None:
    with path.open("rb") as handle:
        remaining = length
        while remaining:
            chunk = handle.read(min(DOWNLOAD_CHUNK_BYTES, remaining))
            if not chunk:
                raise UnexpectedResponse(f"{path} shrank while being resumed.")
            digest.update(chunk)
            remaining -= len(chunk)


def _etag_sha256(response: httpx.Response) -> str:
    etag = response.headers.get("etag", "").strip()
    value = etag[1:-1] if len(etag) >= 2 and etag[0] == etag[-1] == '"' else ""
    if not SHA256.fullmatch(value):
        raise UnexpectedResponse(f"The download's ETag {etag[:80]!r} is not a quoted sha256.")
    return value


def _filename(response: httpx.Response) -> str | None:
    match = _DISPOSITION_FILENAME.search(response.headers.get("content-disposition", ""))
    name = match.group(1) if match else ""
    return name if _FILENAME.fullmatch(name) else None


def _range_start(response: httpx.Response) -> int | None:
    match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
    return int(match.group(1)) if match else None


def _total_size(response: httpx.Response) -> int | None:
    if response.status_code == 206:
        match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
        return int(match.group(3)) if match else None
    length = response.headers.get("content-length", "")
    return int(length) if length.isdigit() else None
