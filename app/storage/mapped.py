"""Reading stored bytes for the network with one copy instead of two.

A read that falls inside one file range returns a ``memoryview`` of a read-only memory map of that file.
uvloop's transport keeps a reference to the buffer it is given rather than copying it, so the kernel
copies the page-cache pages straight into the socket: no ``pread`` into a Python ``bytes`` first, no
thread hop to do that read. The pages of each read are faulted in (``MADV_POPULATE_READ``) in a worker
thread first, so a cold page cache blocks a thread, as ``pread`` would, and never the event loop.

``chunks`` walks the pieces themselves (what a response sends); ``read(n)`` keeps a file's contract of
exactly ``n`` bytes, so a read that straddles pieces is joined into ``bytes`` (what Starlette's
multi-range responses use). Blobs are immutable and only ever unlinked, never truncated, so a mapping cannot fault
past a file's end.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import anyio.to_thread

from app.storage.composed import FileSegment, Segment

# Linux 5.14+; Python's mmap module names it only from 3.13, the kernel's value is stable.
_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22 if sys.platform == "linux" else None)
_PAGE = mmap.ALLOCATIONGRANULARITY

SegmentsBetween = Callable[[int, int], Iterator[Segment]]


class MappedReader:
    """An async, seekable, read-only file over ``segments_between(start, end)`` of ``size`` bytes.

    Has the ``seek``/``read`` that Starlette's ``FileResponse`` uses; ``read(n)`` returns exactly ``n``
    bytes (fewer only at the end), as a file would.
    """

    def __init__(self, segments_between: SegmentsBetween, size: int) -> None:
        self._segments_between = segments_between
        self._size = size
        self._position = 0
        self._maps: dict[Path, mmap.mmap] = {}
        self._populate = _POPULATE_READ

    async def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._size}[whence]
        self._position = max(base + offset, 0)
        return self._position

    async def read(self, size: int = -1) -> bytes | memoryview:
        end = self._size if size < 0 else min(self._position + size, self._size)
        if end <= self._position:
            return b""
        segments = list(self._segments_between(self._position, end))
        self._position = end
        if len(segments) == 1 and isinstance(segments[0], FileSegment):
            return await anyio.to_thread.run_sync(self._mapped_view, segments[0])
        return await anyio.to_thread.run_sync(_joined, segments)

    async def chunks(self, start: int, end: int, unit: int) -> AsyncIterator[bytes | memoryview]:
        """The bytes ``[start, end)`` piece by piece: literal pieces as they are, file ranges as views of at
        most ``unit`` bytes. Nothing is joined or copied, however small the pieces (a zip of many small
        tensors is mostly boundaries)."""
        for segment in self._segments_between(start, end):
            if isinstance(segment, bytes):
                yield segment
                continue
            offset, stop = segment.offset, segment.offset + segment.length
            while offset < stop:
                take = min(unit, stop - offset)
                part = FileSegment(segment.path, offset, take)
                yield await anyio.to_thread.run_sync(self._mapped_view, part)
                offset += take

    def close(self) -> None:
        for path in list(self._maps):
            self._unmap(path)

    def _mapped_view(self, segment: FileSegment) -> memoryview:
        mapped = self._maps.get(segment.path)
        if mapped is None:
            # One map at a time: a model of a thousand tensors must not hold a thousand descriptors and
            # mappings for the whole response. Views still being sent keep theirs alive until sent.
            for path in list(self._maps):
                self._unmap(path)
            with segment.path.open("rb") as handle:
                mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            self._maps[segment.path] = mapped
        end = segment.offset + segment.length
        if end > len(mapped):
            raise OSError(f"{segment.path} is shorter than {end} bytes")
        start = segment.offset - segment.offset % _PAGE
        self._fault_in(mapped, start, end - start)
        return memoryview(mapped)[segment.offset : end]

    def _unmap(self, path: Path) -> None:
        mapped = self._maps.pop(path)
        # Still exported while the transport sends the last views: the map is closed when they go.
        with contextlib.suppress(BufferError):
            mapped.close()

    def _fault_in(self, mapped: mmap.mmap, start: int, length: int) -> None:
        if not hasattr(mapped, "madvise"):  # Windows: the pages fault in as they are sent
            return
        if self._populate is not None:
            try:
                mapped.madvise(self._populate, start, length)
                return
            except OSError as exc:
                # Only "this kernel has no such advice" falls back to read-ahead. Any other error (EFAULT,
                # EIO: a page that cannot be read) ends the response here, not with a SIGBUS on sending.
                if exc.errno not in (errno.EINVAL, errno.ENOSYS):
                    raise
                self._populate = None
        mapped.madvise(mmap.MADV_WILLNEED, start, length)


def _joined(segments: list[Segment]) -> bytes:
    parts: list[bytes] = []
    for segment in segments:
        if isinstance(segment, bytes):
            parts.append(segment)
            continue
        with segment.path.open("rb") as handle:
            data = os.pread(handle.fileno(), segment.length, segment.offset)
        if len(data) != segment.length:
            raise OSError(f"{segment.path} is shorter than {segment.offset + segment.length} bytes")
        parts.append(data)
    return b"".join(parts)
