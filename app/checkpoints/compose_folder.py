"""A model folder (the ``hf`` artifact) as a recipe: a stored zip whose members are composed from blobs.

``save_pretrained`` writes the folder; each of its safetensors files becomes its header (literal bytes)
followed by one tensor blob per tensor, the same blobs the other downloads read, so the tensors are not
stored a second time. Other files (config, tokenizer, index) are literal bytes when small and a blob of
their own otherwise (a tokenizer shared by every version is then stored once). The zip is laid out by
``compose_zip.stored_zip_pieces``; each member's CRC32 is combined from its pieces' CRCs.

``check_composed_zip`` proves the composition against the folder it was made from: read through
``zipfile`` as a client reads it (names, order, local headers, CRCs), every member's bytes equal to
the file's. The folder itself is what ``from_pretrained`` loaded, so the unzipped download is a folder
proven to load.
"""

from __future__ import annotations

import itertools
import json
import mmap
import struct
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from app.checkpoints.compose import TensorSink
from app.checkpoints.compose_zip import ZipMember, stored_zip_pieces
from app.storage.composed import BlobRange, ComposedReader, Literal, Piece, Recipe, RecipeError
from app.storage.crc32 import crc32_combine

# Files up to this size stay inside the recipe; larger ones are blobs (recipes stay small JSON).
LITERAL_FILE_BYTES = 64 * 1024
# Member data starts on this boundary, as torch's archives do (cheap: at most 63 bytes of padding each).
ZIP_ALIGNMENT = 64
_COMPARE_CHUNK = 1 << 20


class ComposedZipMismatch(RuntimeError):
    """The composed zip does not read back as the folder it was made from: a server fault."""


def compose_folder_zip(folder: Path, *, blobs: TensorSink) -> Recipe:
    """The recipe of a stored zip of ``folder``'s files (flat, sorted by name)."""
    members = [_compose_file(path, blobs) for path in sorted(folder.iterdir())]
    return Recipe.build(stored_zip_pieces(members, alignment=ZIP_ALIGNMENT), blobs)


def _compose_file(path: Path, blobs: TensorSink) -> ZipMember:
    if not path.is_file() or path.is_symlink():
        raise ValueError(f"{path.name} in the model folder is not a regular file")
    size = path.stat().st_size
    with _mapped(path, size) as data:
        if path.suffix == ".safetensors":
            regions = _tensor_regions(data)
        elif size > LITERAL_FILE_BYTES:
            regions = [(0, size)]
        else:
            regions = []
        pieces: list[Piece] = []
        crc = 0
        cursor = 0
        # The sink may still be writing a view when ``add`` returns: every view, and the map under them,
        # stays alive until ``finish`` says the writes are done.
        views: list[memoryview] = []
        try:
            for start, end in [*regions, (size, size)]:
                if start > cursor:  # bytes between blobs: headers (and nothing else in a valid file)
                    literal = bytes(data[cursor:start])
                    pieces.append(Literal(literal))
                    crc = zlib.crc32(literal, crc)
                if end > start:
                    views.append(data[start:end])
                    blob = blobs.add(views[-1])
                    pieces.append(BlobRange(sha256=blob.sha256, offset=0, length=blob.size))
                    crc = crc32_combine(crc, blob.crc32, blob.size)
                cursor = max(cursor, end)
        finally:
            try:
                blobs.finish()
            finally:
                for view in views:
                    view.release()
    return ZipMember(name=path.name, pieces=tuple(pieces), size=size, crc32=crc)


@contextmanager
def _mapped(path: Path, size: int) -> Iterator[memoryview]:
    """The file's bytes, memory-mapped (no copy; the page cache is shared with the writer's)."""
    if size == 0:
        yield memoryview(b"")
        return
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        view = memoryview(mapped)
        try:
            yield view
        finally:
            view.release()


def _tensor_regions(data: memoryview) -> list[tuple[int, int]]:
    """Where each tensor's bytes are in a safetensors file, in file order; the whole file as one region
    if its header does not parse (the file is still stored exactly, only not shared with other formats).
    """
    whole = [(0, len(data))] if len(data) > LITERAL_FILE_BYTES else []
    if len(data) < 8:
        return whole
    (header_length,) = struct.unpack("<Q", data[:8])
    if header_length > len(data) - 8:
        return whole
    try:
        header = json.loads(bytes(data[8 : 8 + header_length]))
    except (ValueError, RecursionError):
        return whole
    if not isinstance(header, dict):
        return whole
    base = 8 + header_length
    regions: list[tuple[int, int]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(type(offset) is int for offset in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= len(data) - base
        ):
            return whole
        if offsets[1] > offsets[0]:
            regions.append((base + offsets[0], base + offsets[1]))
    regions.sort()
    if any(later[0] < earlier[1] for earlier, later in itertools.pairwise(regions)):
        return whole  # overlapping tensors: not a file safetensors writes
    return regions


def check_composed_zip(recipe: Recipe, blobs: TensorSink, folder: Path) -> None:
    """Read the composed zip as a client does and require it to be exactly ``folder``: the same names in
    the same order, stored (uncompressed), members one after another, each CRC32 right (``zipfile``
    checks it at each member's end) and each member's bytes equal to the file's. Reads in 1 MiB
    chunks: memory stays flat whatever the size."""
    expected = sorted(path.name for path in folder.iterdir())
    try:
        with ComposedReader(recipe, blobs) as reader, zipfile.ZipFile(reader) as archive:
            infos = archive.infolist()
            names = [info.filename for info in infos]
            if names != expected:
                raise ComposedZipMismatch(f"the composed zip holds {names[:8]}, the folder {expected[:8]}")
            _check_layout(infos, recipe.size)
            for info in infos:
                _compare_member(archive, info, folder / info.filename)
    except (zipfile.BadZipFile, RecipeError, OSError, EOFError) as exc:
        raise ComposedZipMismatch(f"the composed zip does not read back: {exc}") from exc


def _check_layout(infos: Sequence[zipfile.ZipInfo], size: int) -> None:
    end = 0
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
            raise ComposedZipMismatch(f"the composed member {info.filename} is not stored as is")
        if info.header_offset < end:
            raise ComposedZipMismatch(f"the composed member {info.filename} overlaps the one before it")
        end = info.header_offset + info.file_size
    if end > size:
        raise ComposedZipMismatch("the composed zip's members run past its end")


def _compare_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> None:
    if info.file_size != path.stat().st_size:
        raise ComposedZipMismatch(f"the composed member {info.filename} has the wrong size")
    # zipfile.open checks the local header (signature, name) at the central directory's offset.
    with archive.open(info) as member, path.open("rb") as original:
        while chunk := member.read(_COMPARE_CHUNK):
            if chunk != original.read(len(chunk)):
                raise ComposedZipMismatch(f"the composed member {info.filename} differs from the file")
        if original.read(1):
            raise ComposedZipMismatch(f"the composed member {info.filename} is shorter than the file")
