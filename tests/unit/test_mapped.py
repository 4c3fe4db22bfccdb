"""MappedReader: the composed bytes in exact-size reads, views of the blobs' memory maps where it can."""

from __future__ import annotations

import hashlib
from pathlib import Path

import anyio
import pytest

from app.storage.composed import BlobRange, Literal, Piece, Recipe, segments
from app.storage.mapped import MappedReader


class _Blobs:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256


def _recipe(tmp_path: Path) -> tuple[Recipe, _Blobs, bytes]:
    blobs = _Blobs(tmp_path)
    first, second = bytes(range(256)) * 40, b"\x07\x09" * 3000
    for data in (first, second):
        (tmp_path / hashlib.sha256(data).hexdigest()).write_bytes(data)
    a, b = hashlib.sha256(first).hexdigest(), hashlib.sha256(second).hexdigest()
    pieces: list[Piece] = [
        Literal(b"HEADER"),
        BlobRange(a, 0, len(first)),
        Literal(b"--"),
        BlobRange(b, 100, 5000),
    ]
    recipe = Recipe.build(pieces, blobs)
    return recipe, blobs, b"HEADER" + first + b"--" + second[100:5100]


@pytest.mark.parametrize("unit", [1, 7, 4096, 10_000, 1 << 20])
def test_reads_of_any_size_give_the_composed_bytes(tmp_path: Path, unit: int) -> None:
    recipe, blobs, expected = _recipe(tmp_path)

    async def read_all() -> tuple[bytes, int]:
        reader = MappedReader(lambda s, e: segments(recipe, blobs, s, e), recipe.size)
        out, views = bytearray(), 0
        try:
            while chunk := await reader.read(unit):
                assert len(chunk) == unit or len(out) + len(chunk) == recipe.size  # short only at the end
                views += isinstance(chunk, memoryview)
                out += chunk
        finally:
            reader.close()
        return bytes(out), views

    data, views = anyio.run(read_all)
    assert data == expected
    if unit <= 4096:
        assert views > 0  # reads inside one blob are not copies


def test_seek_then_read_returns_that_range(tmp_path: Path) -> None:
    recipe, blobs, expected = _recipe(tmp_path)

    async def ranges() -> list[bytes]:
        reader = MappedReader(lambda s, e: segments(recipe, blobs, s, e), recipe.size)
        got = []
        for start, length in [(0, 3), (4, 10), (6000, 5000), (recipe.size - 4, 100), (recipe.size + 5, 1)]:
            await reader.seek(start)
            got.append(bytes(await reader.read(length)))
        reader.close()
        return got

    assert anyio.run(ranges) == [
        expected[0:3],
        expected[4:14],
        expected[6000:11000],
        expected[-4:],
        b"",
    ]


def test_chunks_send_every_piece_as_it_is_and_never_join_them(tmp_path: Path) -> None:
    recipe, blobs, expected = _recipe(tmp_path)

    async def walk(start: int, end: int) -> list[bytes | memoryview]:
        reader = MappedReader(lambda s, e: segments(recipe, blobs, s, e), recipe.size)
        try:
            return [chunk async for chunk in reader.chunks(start, end, 4096)]
        finally:
            reader.close()

    whole = anyio.run(walk, 0, recipe.size)
    assert b"".join(whole) == expected
    assert [len(c) for c in whole] == [6, 4096, 4096, 10240 - 8192, 2, 4096, 5000 - 4096]
    assert all(isinstance(c, memoryview) for c in whole if len(c) not in (6, 2))
    middle = anyio.run(walk, 3, recipe.size - 10)
    assert b"".join(middle) == expected[3:-10]


def test_one_blob_is_mapped_at_a_time_however_many_the_file_reads(tmp_path: Path) -> None:
    """A model of many tensors must not hold a descriptor and a mapping per tensor for the whole response."""
    blobs = _Blobs(tmp_path)
    pieces: list[Piece] = []
    expected = b""
    for index in range(60):
        data = bytes([index]) * 5000
        (tmp_path / hashlib.sha256(data).hexdigest()).write_bytes(data)
        pieces += [Literal(b"H"), BlobRange(hashlib.sha256(data).hexdigest(), 0, len(data))]
        expected += b"H" + data
    recipe = Recipe.build(pieces, blobs)
    fds = Path("/proc/self/fd")

    async def walk() -> tuple[bytes, int]:
        reader = MappedReader(lambda s, e: segments(recipe, blobs, s, e), recipe.size)
        before, most = len(list(fds.iterdir())), 0
        out = bytearray()
        try:
            async for chunk in reader.chunks(0, recipe.size, 1 << 20):
                out += chunk
                if isinstance(chunk, memoryview):
                    chunk.release()  # what the transport does once a view is sent
                most = max(most, len(list(fds.iterdir())) - before)
        finally:
            reader.close()
        return bytes(out), most

    data, most_open = anyio.run(walk)
    assert data == expected
    assert most_open <= 2


def test_a_blob_shorter_than_its_recipe_fails_the_read_instead_of_sending_short(tmp_path: Path) -> None:
    recipe, blobs, _ = _recipe(tmp_path)
    for piece in recipe.pieces:
        if isinstance(piece, BlobRange):
            path = blobs.path_for(piece.sha256)
            path.write_bytes(path.read_bytes()[:100])  # damaged on disk, outside the service

    async def walk() -> None:
        reader = MappedReader(lambda s, e: segments(recipe, blobs, s, e), recipe.size)
        try:
            async for _ in reader.chunks(0, recipe.size, 1 << 20):
                pass
        finally:
            reader.close()

    with pytest.raises(OSError, match="shorter than"):
        anyio.run(walk)
