"""Downloads into the cache: stream to ``<sha256>.incomplete``, resume it with ``Range``, verify it against
the server's CRC-32 (or, when asked or when the server sends none, the sha256 in the ETag; see
``weightvault.checksums``), then rename it into place. A cached blob is revalidated with
``If-None-Match``, so a second pull of the same artifact transfers nothing (304).

The body is received in ``DOWNLOAD_CHUNK_BYTES`` units into a few reused buffers. On a plain HTTP/1.1
``Content-Length`` response (the server's downloads) the bytes after httpx's first chunk are read from the
connection's socket with ``recv_into`` (httpx's own path is a 64 KiB read through h11 plus a copy per
chunk, several times the cost of the transfer itself); anything else (TLS tunnels, HTTP/2, compressed
or chunked bodies, test transports) goes through ``iter_bytes``. Each chunk is checked by a second
thread (hashlib and the CRC release the GIL on large buffers) and written by a third, so receiving,
checking and writing overlap; everything received is in the partial file before it is closed, so an
interrupted download resumes after the last byte that arrived.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from weightvault.cache import SHA256, Cache, RefEntry
from weightvault.checksums import Checksum, Verify, checksum_for
from weightvault.errors import ChecksumMismatch, UnexpectedResponse
from weightvault.progress import Reporter, Task
from weightvault.transport import Transport, check

DOWNLOAD_CHUNK_BYTES = 1024 * 1024  # one receive, hash, write and progress update
BUFFERS = 8  # chunks received but not yet written (the writer's backlog), reused
SYNC_EVERY_BYTES = 32 * 1024 * 1024  # start writing to disk during the transfer, not all at the end
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
    verified_by: str | None = None  # "crc32" or "sha256" when this pull checked a body; None from the cache


def fetch(
    transport: Transport,
    path: str,
    *,
    params: dict[str, Any],
    cache: Cache,
    key: str,
    reporter: Reporter,
    verify: Verify = "crc32",
) -> Pulled:
    """Download ``path`` into the cache (or revalidate the cached copy) and return the verified blob."""
    origin = transport.base_url
    for _ in range(ATTEMPTS):
        known = cache.read_ref(key)
        with transport.stream(
            "GET", path, params=params, headers=_conditional_headers(cache, known)
        ) as response:
            if response.status_code == 304:
                if known is not None:
                    with cache.lock(known.sha256):
                        if cache.usable_blob(known.sha256, origin=origin, verify=verify):
                            return _cached(cache, known)
                continue  # the blob vanished after the request was sent, or failed its sha256
            if response.status_code == 416 and known is not None:
                cache.discard_partial(known.sha256)  # the partial file is not a prefix of this artifact
                continue
            check(response)
            entry = RefEntry(_etag_sha256(response), _filename(response), _total_size(response))
            # Recorded before the body arrives, so an interrupted download is resumed next time.
            cache.write_ref(key, entry)
            fetched = _receive(response, cache, entry, reporter, verify, origin)
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


def _receive(
    response: httpx.Response, cache: Cache, entry: RefEntry, reporter: Reporter, verify: Verify, origin: str
) -> Pulled | None:
    """Stream the body after what the partial file holds; None when the attempt must start over."""
    sha256 = entry.sha256
    with cache.lock(sha256):
        # Also a blob another process finished while we waited, or one another server's pull cached.
        if cache.usable_blob(sha256, origin=origin, verify=verify):
            return _cached(cache, entry)
        offset = 0
        # The kept part of a resumed download may have come from another server (partial files are named
        # by the sha256 a server claimed): a forged prefix can be given the real one's CRC, not its sha256.
        resumed = response.status_code == 206
        digest, expected = checksum_for(response, verify="sha256" if resumed else verify, sha256=sha256)
        if resumed:
            offset = cache.partial_size(sha256)
            if _range_start(response) != offset:
                cache.discard_partial(sha256)
                return None
            _hash_prefix(cache.partial(sha256), offset, digest)
        elif response.status_code != 200:
            raise UnexpectedResponse(f"A download answered {response.status_code}, not 200 or 206.")
        description = entry.filename or sha256[:12]
        with (
            cache.partial(sha256).open("ab" if offset else "wb", buffering=0) as handle,
            reporter.task(description, total=entry.size, completed=offset) as task,
        ):
            transferred = _write_body(response, handle, digest, task)
            os.fsync(handle.fileno())
        size = offset + transferred
        actual = digest.hexdigest()
        if actual != expected or (entry.size is not None and size != entry.size):
            cache.discard_partial(sha256)
            raise ChecksumMismatch(
                f"The downloaded file ({size} bytes) has {digest.name} {actual}, not the server's {expected}; "
                "it was discarded, try again.",
                expected=expected,
                actual=actual,
            )
        blob = cache.commit(sha256, crc_checked_from=origin if digest.name == "crc32" else None)
    return Pulled(blob, sha256, size, entry.filename, False, offset, transferred, digest.name)


def _write_body(response: httpx.Response, handle: Any, digest: Checksum, task: Task) -> int:
    """Receive the body into ``handle`` (unbuffered) and ``digest``; the number of bytes received.

    Whatever happens, every chunk received (and reported to ``task``) is written before this returns.
    """
    chunk_bytes = DOWNLOAD_CHUNK_BYTES
    writer = _Writer(handle)
    hasher = _Hasher(digest)
    received = 0
    try:
        for view, release in _body_chunks(response, chunk_bytes):
            # Receiving, hashing and writing each take a thread (all three release the GIL): hashing
            # alone costs more than receiving, so on the receiving thread it would set the pace.
            release_after_both = _Countdown(2, release)
            hasher.put(view, release_after_both)
            writer.put(view, release_after_both)
            received += len(view)
            task.advance(len(view))
    finally:
        try:
            writer.finish()
        finally:
            hasher.finish()
    return received


def _body_chunks(
    response: httpx.Response, chunk_bytes: int
) -> Iterator[tuple[memoryview, Callable[[], None]]]:
    """The body as (chunk, release) pairs; call ``release`` once the chunk is no longer needed."""
    length = _plain_length(response)
    if length is None:
        for chunk in response.iter_bytes(chunk_bytes):
            yield memoryview(chunk), _nothing
        return
    raw = response.iter_raw()  # a generator
    # h11 hands on everything it has buffered with each chunk, so after the first one the rest of the
    # body is still in the socket.
    first = next(raw, b"")
    if first:
        yield memoryview(first), _nothing
    remaining = length - len(first)
    if remaining <= 0:
        return
    sock = response.extensions["network_stream"].get_extra_info("socket")
    timeout = (response.request.extensions.get("timeout") or {}).get("read")
    sock.settimeout(timeout)
    buffers: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
    for _ in range(BUFFERS):
        buffers.put(bytearray(chunk_bytes))
    while remaining:
        buffer = buffers.get()
        view = memoryview(buffer)[: min(chunk_bytes, remaining)]
        filled = 0
        error: httpx.TransportError | None = None
        cause: OSError | None = None
        try:
            while filled < len(view):
                count = sock.recv_into(view[filled:])
                if not count:
                    error = httpx.RemoteProtocolError(
                        f"The server closed the connection {remaining - filled} bytes before the end "
                        "of the body."
                    )
                    break
                filled += count
        except TimeoutError as exc:
            error, cause = httpx.ReadTimeout(f"No data for {timeout}s ({exc})."), exc
        except OSError as exc:
            error, cause = httpx.ReadError(str(exc)), exc
        if filled:  # also what arrived before a failure: the partial file keeps it for a resume
            yield view[:filled], lambda buffer=buffer: buffers.put(buffer)  # type: ignore[misc]
        else:
            buffers.put(buffer)
        if error is not None:
            raise error from cause
        remaining -= filled
    # Closes the connection: h11 never saw the rest of the body, so it cannot be reused.
    raw.close()  # type: ignore[attr-defined]


def _plain_length(response: httpx.Response) -> int | None:
    """The body's length when it can be read straight from the socket after httpx's first chunk."""
    headers = response.headers
    length = headers.get("content-length", "")
    if (
        response.http_version != "HTTP/1.1"
        or not length.isdigit()
        or "transfer-encoding" in headers
        or headers.get("content-encoding", "identity").strip().lower() != "identity"
    ):
        return None
    stream = response.extensions.get("network_stream")
    get_extra_info = getattr(stream, "get_extra_info", None)
    if get_extra_info is None:
        return None
    sock = get_extra_info("socket")
    # A socket whose bytes are the response: plain TCP, or TLS read through its SSLSocket. Not the outer
    # socket of TLS inside a TLS tunnel (an ssl_object that is not the socket's own).
    if isinstance(sock, ssl.SSLSocket) or (
        isinstance(sock, socket.socket) and get_extra_info("ssl_object") is None
    ):
        return int(length)
    return None


_fdatasync = getattr(os, "fdatasync", os.fsync)  # macOS and Windows have no fdatasync


def _nothing() -> None:
    pass


class _InOrder:
    """Applies ``_consume`` to each chunk put, in order, in a thread of its own; ``release`` is called for
    every chunk, even after an error, so the receiving thread always gets its buffers back."""

    def __init__(self, name: str) -> None:
        self._chunks: queue.SimpleQueue[tuple[memoryview, Callable[[], None]] | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, view: memoryview, release: Callable[[], None]) -> None:
        if self._error is not None:
            raise self._error
        self._chunks.put((view, release))

    def finish(self) -> None:
        """Wait until everything put was consumed; raise the first error, if any."""
        self._chunks.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _consume(self, view: memoryview) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while (item := self._chunks.get()) is not None:
            view, release = item
            if self._error is None:
                try:
                    self._consume(view)
                except BaseException as exc:  # handed to the receiving thread by put() or finish()
                    self._error = exc
            release()


class _Hasher(_InOrder):
    """Feeds chunks to ``digest`` (hashlib and the CRC release the GIL)."""

    def __init__(self, digest: Checksum) -> None:
        self._digest = digest
        super().__init__("weightvault-download-hash")

    def _consume(self, view: memoryview) -> None:
        self._digest.update(view)


class _Writer(_InOrder):
    """Writes chunks to the file (os.write releases the GIL).

    Every ``SYNC_EVERY_BYTES`` written, another thread has the kernel write them to disk (fdatasync) while
    the transfer goes on, so the fsync before the blob is committed waits only for the last few.
    """

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self._unsynced = 0
        self._syncs: queue.SimpleQueue[bool] = queue.SimpleQueue()  # True: sync, False: stop
        self._syncer = threading.Thread(target=self._sync, name="weightvault-download-sync", daemon=True)
        self._syncer.start()
        super().__init__("weightvault-download-write")

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._syncs.put(False)
            self._syncer.join()

    def _consume(self, view: memoryview) -> None:
        self._unsynced += len(view)
        while view:
            view = view[self._handle.write(view) :]
        if self._unsynced >= SYNC_EVERY_BYTES:
            self._syncs.put(True)
            self._unsynced = 0

    def _sync(self) -> None:
        while self._syncs.get():
            while not self._syncs.empty():  # requests that piled up while syncing: one sync covers them
                if not self._syncs.get():
                    return
            # Errors are left to the fsync that follows the last write.
            with contextlib.suppress(OSError):
                _fdatasync(self._handle.fileno())


class _Countdown:
    """Calls ``release`` on the ``count``-th call: a buffer goes back once every consumer is done with it."""

    def __init__(self, count: int, release: Callable[[], None]) -> None:
        self._count = count
        self._release = release
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self._count -= 1
            done = self._count == 0
        if done:
            self._release()


def _hash_prefix(path: Path, length: int, digest: Checksum) -> None:
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
