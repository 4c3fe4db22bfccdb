"""The composed-file reader: any byte range, sendfile segments, flat memory, strict recipes."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import random
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import pytest
import torch

from app.checkpoints.compose import compose_torch
from app.checkpoints.compose_zip import MAX32, ZipRecord, torch_zip_pieces
from app.storage.composed import (
    BlobRange,
    FileSegment,
    Literal,
    Recipe,
    RecipeError,
    iter_chunks,
    merge_pieces,
    open_composed,
    segments,
    send_range,
    verify,
)
from app.storage.tensorblobs import TensorBlob, TensorBlobs, describe_file


@pytest.fixture
def blobs(tmp_path: Path) -> TensorBlobs:
    return TensorBlobs(tmp_path / "tensors")


@pytest.fixture
def small(blobs: TensorBlobs) -> tuple[Recipe, bytes]:
    torch.manual_seed(0)
    weights = {"a": torch.randn(300), "b": torch.randn(7, dtype=torch.float16), "c": torch.arange(5)}
    weights["tied"] = weights["a"]
    recipe = compose_torch(weights, blobs=blobs)
    return recipe, b"".join(iter_chunks(recipe, blobs))


def _sendfile_like(recipe: Recipe, blobs: TensorBlobs, start: int, end: int) -> bytes:
    """What a server sends for ``Range: bytes=start-(end-1)``: literal bytes, file ranges by fd."""
    out = bytearray()
    for segment in segments(recipe, blobs, start, end):
        if isinstance(segment, bytes):
            out += segment
            continue
        fd = os.open(segment.path, os.O_RDONLY)
        try:
            out += os.pread(fd, segment.length, segment.offset)
        finally:
            os.close(fd)
    return bytes(out)


def test_any_byte_range_equals_the_slice_of_the_whole(
    small: tuple[Recipe, bytes], blobs: TensorBlobs
) -> None:
    recipe, whole = small
    rng = random.Random(13)
    bounds = [(0, recipe.size), (0, 0), (recipe.size, recipe.size), (recipe.size - 1, recipe.size)]
    bounds += [
        tuple(sorted((rng.randrange(recipe.size + 1), rng.randrange(recipe.size + 1)))) for _ in range(200)
    ]
    with open_composed(recipe, blobs) as handle:
        for start, end in bounds:
            assert _sendfile_like(recipe, blobs, start, end) == whole[start:end]
            assert b"".join(iter_chunks(recipe, blobs, start, end, chunk=7)) == whole[start:end]
            handle.seek(start)
            assert handle.read(end - start) == whole[start:end]
    assert _sendfile_like(recipe, blobs, 10, recipe.size + 100) == whole[10:]


def test_send_range_moves_blob_bytes_with_sendfile(
    small: tuple[Recipe, bytes], blobs: TensorBlobs, tmp_path: Path
) -> None:
    recipe, whole = small
    for start, end in [(0, recipe.size), (5, 900), (recipe.size - 3, recipe.size), (40, 40)]:
        target = tmp_path / "out.bin"
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            assert send_range(fd, recipe, blobs, start, end) == end - start
        finally:
            os.close(fd)
        assert target.read_bytes() == whole[start:end]


def test_blob_ranges_come_out_as_file_segments_not_bytes(
    small: tuple[Recipe, bytes], blobs: TensorBlobs
) -> None:
    recipe, _whole = small
    parts = list(segments(recipe, blobs))
    file_parts = [part for part in parts if isinstance(part, FileSegment)]
    assert len(file_parts) == 3  # a (tied: once), b, c
    assert all(part.path.is_file() and part.path.parent.parent == blobs.root for part in file_parts)
    assert sum(part.length for part in file_parts) == 300 * 4 + 7 * 2 + 5 * 8


def test_the_reader_seeks_like_a_file(small: tuple[Recipe, bytes], blobs: TensorBlobs) -> None:
    recipe, whole = small
    with open_composed(recipe, blobs) as handle:
        assert handle.seekable() and handle.readable()
        assert handle.seek(-10, io.SEEK_END) == recipe.size - 10
        assert handle.read() == whole[-10:]
        assert handle.read(5) == b""
        handle.seek(100)
        handle.seek(20, io.SEEK_CUR)
        assert handle.tell() == 120 and handle.read(50) == whole[120:170]
        with pytest.raises(ValueError):
            handle.seek(-1)


def test_memory_stays_flat_whatever_the_blob_size(tmp_path: Path, blobs: TensorBlobs) -> None:
    """A 256 MiB tensor blob (sparse on disk) streamed whole: Python memory stays near one chunk."""
    size = 256 * 1024 * 1024
    sha = "ab" * 32
    path = blobs.path_for(sha)
    path.parent.mkdir(parents=True)
    with path.open("wb") as handle:
        handle.truncate(size)
    pieces = [Literal(b"header"), BlobRange(sha256=sha, offset=0, length=size), Literal(b"trailer")]
    tracemalloc.start()
    try:
        recipe = Recipe.build(pieces, blobs)  # hashes every byte
        digest = hashlib.sha256()
        with open_composed(recipe, blobs) as handle:
            while chunk := handle.read(1024 * 1024):
                digest.update(chunk)
        list(segments(recipe, blobs))
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest.hexdigest() == recipe.sha256
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes for a {size}-byte blob"


def test_recipes_round_trip_through_compact_json(small: tuple[Recipe, bytes]) -> None:
    recipe, _whole = small
    encoded = recipe.to_json()
    assert b" " not in encoded and Recipe.from_json(encoded) == recipe
    assert len(encoded) < 2 * recipe.literal_bytes + 100 * len(recipe.pieces)


def test_a_recipe_knows_the_crc32_of_the_file_it_composes(small: tuple[Recipe, bytes]) -> None:
    recipe, whole = small
    assert recipe.crc32 == zlib.crc32(whole)
    assert Recipe.from_json(recipe.to_json()).crc32 == zlib.crc32(whole)
    # Recipes written before CRCs were recorded have none, and still read.
    document = json.loads(recipe.to_json())
    del document["crc32"]
    assert Recipe.from_json(json.dumps(document).encode()).crc32 is None


@pytest.mark.parametrize(
    "mangle",
    [
        lambda doc: doc.update(format="other/1"),
        lambda doc: doc.update(size=doc["size"] + 1),
        lambda doc: doc.update(sha256="xyz"),
        lambda doc: doc.update(crc32=2**32),
        lambda doc: doc.update(crc32="1234abcd"),
        lambda doc: doc["pieces"].append(["t", "00" * 32, -1, 4]),
        lambda doc: doc["pieces"].append(["t", "../../etc/passwd", 0, 0]),
        lambda doc: doc["pieces"].append(["b", "not base64!"]),
        lambda doc: doc["pieces"].append(["q"]),
        lambda doc: doc.update(pieces="none"),
    ],
)
def test_a_malformed_recipe_is_refused(small: tuple[Recipe, bytes], mangle: object) -> None:
    recipe, _whole = small
    document = json.loads(recipe.to_json())
    mangle(document)  # type: ignore[operator]
    with pytest.raises(RecipeError):
        Recipe.from_json(json.dumps(document).encode())
    with pytest.raises(RecipeError):
        Recipe.from_json(b"{not json")


def test_a_blob_shorter_than_its_range_is_an_error_not_short_data(blobs: TensorBlobs) -> None:
    blob = blobs.add(memoryview(b"12345678"))
    recipe = Recipe(pieces=(BlobRange(sha256=blob.sha256, offset=4, length=8),), size=8, sha256="0" * 64)
    with pytest.raises(RecipeError):
        b"".join(iter_chunks(recipe, blobs))
    with open_composed(recipe, blobs) as handle, pytest.raises(RecipeError):
        handle.read()


def test_adjacent_literals_merge_and_empty_pieces_vanish() -> None:
    sha = "cd" * 32
    pieces = [
        Literal(b"a"),
        Literal(b""),
        Literal(b"b"),
        BlobRange(sha, 0, 0),
        BlobRange(sha, 0, 3),
        Literal(b"c"),
    ]
    assert merge_pieces(pieces) == (Literal(b"ab"), BlobRange(sha, 0, 3), Literal(b"c"))


def test_blobs_are_described_the_same_from_memory_and_from_disk(blobs: TensorBlobs) -> None:
    data = memoryview(bytes(range(256)) * 100)
    blob = blobs.add(data)
    assert describe_file(blobs.path_for(blob.sha256)) == blob
    assert blobs.add(data) == blob and len(list(blobs)) == 1


def test_members_past_4_gib_get_zip64_records(blobs: TensorBlobs) -> None:
    """A 4 GiB + 1 KiB storage (a sparse file, not read) followed by a small one: zipfile finds every
    member where the zip64 fields say, and reads the ones after the big one with their CRCs."""
    big_size = MAX32 + 1024
    big_sha = "ef" * 32
    path = blobs.path_for(big_sha)
    path.parent.mkdir(parents=True)
    with path.open("wb") as handle:
        handle.truncate(big_size)
    big = TensorBlob(sha256=big_sha, size=big_size, crc32=0, head=bytes(8))
    small = blobs.add(memoryview(b"after the big one"))
    records = [
        ZipRecord("data.pkl", b"\x80\x02}q\x00."),
        ZipRecord("byteorder", b"little"),
        ZipRecord("data/0", big),
        ZipRecord("data/1", small),
    ]
    pieces = merge_pieces(torch_zip_pieces("archive", records, alignment=64))
    recipe = Recipe(pieces=pieces, size=sum(piece.length for piece in pieces), sha256="0" * 64)
    with open_composed(recipe, blobs) as handle, zipfile.ZipFile(handle) as archive:
        infos = {info.filename: info for info in archive.infolist()}
        assert infos["archive/data/0"].file_size == big_size
        assert infos["archive/data/1"].header_offset > MAX32
        assert archive.read("archive/data/1") == b"after the big one"
        assert archive.read("archive/version") == b"3\n"
        assert archive.read("archive/.data/serialization_id").isdigit()
        assert archive.read("archive/data.pkl") == b"\x80\x02}q\x00."


def test_verify_names_missing_short_and_altered_blobs(
    small: tuple[Recipe, bytes], blobs: TensorBlobs
) -> None:
    recipe, _whole = small
    assert verify(recipe, blobs) == []
    ranges = [piece for piece in recipe.pieces if isinstance(piece, BlobRange)]
    altered, short, missing = (blobs.path_for(piece.sha256) for piece in ranges)
    data = bytearray(altered.read_bytes())
    data[0] ^= 1
    altered.write_bytes(bytes(data))
    assert verify(recipe, blobs) == [
        f"the composed bytes hash to {_sha_of(recipe, blobs)}, not {recipe.sha256}"
    ]
    assert verify(recipe, blobs, rehash=False) == []
    data[0] ^= 1
    altered.write_bytes(bytes(data))
    # The right bytes, the wrong recorded CRC: what fsck says when the CRC clients check is not the file's.
    wrong_crc = dataclasses.replace(recipe, crc32=(recipe.crc32 or 0) ^ 1)
    assert verify(wrong_crc, blobs) == [
        f"the composed bytes have CRC-32 {recipe.crc32:08x}, not {wrong_crc.crc32:08x}"
    ]
    short.write_bytes(short.read_bytes()[:-1])
    missing.unlink()
    problems = verify(recipe, blobs)
    assert len(problems) == 2
    assert any(missing.name in p and "missing" in p for p in problems)
    assert any(short.name in p and "holds" in p for p in problems)


def _sha_of(recipe: Recipe, blobs: TensorBlobs) -> str:
    return hashlib.sha256(b"".join(iter_chunks(recipe, blobs))).hexdigest()
