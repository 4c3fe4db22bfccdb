"""The pieces of a torch.save zip archive, laid out exactly as torch's writer (miniz) lays them out.

torch.save writes an uncompressed zip through miniz with zip64 enabled: each local header carries zeros
for CRC and sizes (general-purpose bit 3) and a data descriptor follows the data; an ``FB`` extra field
pads the header so every member's data starts on a 64-byte boundary; members of 4 GiB or more, or
starting past 4 GiB, get a zip64 extra field and a 24-byte descriptor; a zip64 end-of-directory record
and locator always precede the classic one. Here the same bytes are produced as literal pieces around
blob ranges, from each member's size and CRC32 alone, so no tensor byte is read or copied. The same
layout (``stored_zip_pieces``) holds any zip whose members are composed, such as the ``hf`` folder zip.
"""

from __future__ import annotations

import functools
import io
import struct
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from app.storage.composed import BlobRange, Literal, Piece
from app.storage.tensorblobs import TensorBlob

MAX32 = 0xFFFFFFFF
MAX16 = 0xFFFF
_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_DESCRIPTOR32 = struct.Struct("<4sIII")
_DESCRIPTOR64 = struct.Struct("<4sIQQ")
_ZIP64_END = struct.Struct("<4sQHHIIQQQQ")
_ZIP64_LOCATOR = struct.Struct("<4sIQI")
_END = struct.Struct("<4sHHHHIIH")
_FLAG_UTF8 = 0x0800
_FLAG_DESCRIPTOR = 0x0008
_DESCRIPTOR_SIGNATURE = b"PK\x07\x08"


@dataclass(frozen=True)
class ZipRecord:
    """One member, named inside the archive folder: literal bytes or a whole tensor blob."""

    name: str
    data: bytes | TensorBlob

    @property
    def size(self) -> int:
        return len(self.data) if isinstance(self.data, bytes) else self.data.size

    @property
    def crc32(self) -> int:
        return zlib.crc32(self.data) if isinstance(self.data, bytes) else self.data.crc32

    @property
    def head(self) -> bytes:
        return self.data[:8] if isinstance(self.data, bytes) else self.data.head


@dataclass(frozen=True)
class ZipMember:
    """One stored (uncompressed) member: its full name, its data as pieces, their size and CRC32."""

    name: str
    pieces: tuple[Piece, ...]
    size: int
    crc32: int


def torch_zip_pieces(archive: str, records: Sequence[ZipRecord], *, alignment: int) -> list[Piece]:
    """The whole archive: ``records`` in order, then torch's ``version`` and serialization id records,
    the central directory and the end records."""
    end_records = _end_of_file_records(tuple(record.name for record in records), alignment)
    version = ZipRecord(end_records.version_name, end_records.version)
    written = [*records, version]
    identifier = ZipRecord(end_records.id_name, serialization_id(end_records.name_hash, written).encode())
    return stored_zip_pieces(
        [_as_member(archive, record) for record in [*written, identifier]], alignment=alignment
    )


def _as_member(archive: str, record: ZipRecord) -> ZipMember:
    pieces: tuple[Piece, ...]
    if isinstance(record.data, bytes):
        pieces = (Literal(record.data),)
    elif record.size:
        pieces = (BlobRange(sha256=record.data.sha256, offset=0, length=record.size),)
    else:
        pieces = ()
    return ZipMember(f"{archive}/{record.name}", pieces, record.size, record.crc32)


def stored_zip_pieces(members: Sequence[ZipMember], *, alignment: int) -> list[Piece]:
    """A zip of ``members`` in order, laid out as torch's writer lays out its archives (each member's
    data aligned, its CRC and sizes in a data descriptor, zip64 records always present): any zip
    reader reads it, and no member's data is read or copied to build it."""
    pieces: list[Piece] = []
    directory: list[bytes] = []
    cursor = 0
    for member in members:
        header, central = _member(member, cursor, alignment)
        descriptor = _descriptor(member, cursor)
        pieces += [Literal(header), *member.pieces, Literal(descriptor)]
        directory.append(central)
        cursor += len(header) + member.size + len(descriptor)
    pieces.append(Literal(_end_of_directory(b"".join(directory), cursor, len(directory))))
    return pieces


def _needs_zip64(member: ZipMember, cursor: int) -> bool:
    return member.size >= MAX32 or cursor >= MAX32


def _zip64_extra(member: ZipMember, cursor: int, *, local: bool) -> bytes:
    if not _needs_zip64(member, cursor):
        return b""
    values: list[int] = []
    if member.size >= MAX32:
        # miniz writes the local header before the data: its compressed size is still 0 there.
        values += [member.size, 0 if local else member.size]
    if cursor >= MAX32:
        values.append(cursor)
    return struct.pack(f"<HH{len(values)}Q", 0x0001, 8 * len(values), *values)


def _member(member: ZipMember, cursor: int, alignment: int) -> tuple[bytes, bytes]:
    """The local header (with name, extra fields and alignment padding) and the central entry."""
    name = member.name.encode()
    flags = _FLAG_UTF8 | (_FLAG_DESCRIPTOR if member.size else 0)
    zip64_local = _zip64_extra(member, cursor, local=True)
    # torch's getPadding: the FB field's own 4 bytes, then whatever reaches the alignment.
    data_start = cursor + _LOCAL.size + len(name) + len(zip64_local) + 4
    padding = -data_start % alignment
    padding_field = b"FB" + struct.pack("<H", padding) + b"Z" * padding
    extra = zip64_local + padding_field
    local = _LOCAL.pack(b"PK\x03\x04", 0, flags, 0, 0, 0, 0, 0, 0, len(name), len(extra))
    zip64_central = _zip64_extra(member, cursor, local=False)
    central = _CENTRAL.pack(
        b"PK\x01\x02",
        0,
        0,
        flags,
        0,
        0,
        0,
        member.crc32,
        min(member.size, MAX32),
        min(member.size, MAX32),
        len(name),
        len(zip64_central),
        0,
        0,
        0,
        0,
        min(cursor, MAX32),
    )
    return local + name + extra, central + name + zip64_central


def _descriptor(member: ZipMember, cursor: int) -> bytes:
    if not member.size:
        return b""
    if _needs_zip64(member, cursor):
        return _DESCRIPTOR64.pack(_DESCRIPTOR_SIGNATURE, member.crc32, member.size, member.size)
    return _DESCRIPTOR32.pack(_DESCRIPTOR_SIGNATURE, member.crc32, member.size, member.size)


def _end_of_directory(directory: bytes, offset: int, entries: int) -> bytes:
    zip64_end = _ZIP64_END.pack(
        b"PK\x06\x06", _ZIP64_END.size - 12, 0x031E, 0x002D, 0, 0, entries, entries, len(directory), offset
    )
    locator = _ZIP64_LOCATOR.pack(b"PK\x06\x07", 0, offset + len(directory), 1)
    end = _END.pack(
        b"PK\x05\x06",
        0,
        0,
        min(entries, MAX16),
        min(entries, MAX16),
        min(len(directory), MAX32),
        min(offset, MAX32),
        0,
    )
    return directory + zip64_end + locator + end


def _hash_combine(seed: int, value: int) -> int:
    """c10::hash_combine on 64-bit size_t."""
    mask = (1 << 64) - 1
    return (seed ^ ((value + 0x9E3779B9 + ((seed << 6) & mask) + (seed >> 2)) & mask)) & mask


def serialization_id(name_hash: str, written: Sequence[ZipRecord]) -> str:
    """torch's ``.data/serialization_id``: a hash of the record names, then every CRC32 combined.

    torch combines whatever its write callback sees that starts like a data descriptor: each record's
    real descriptor, and also a member's data when its first bytes happen to be ``PK\\x07\\x08``.
    """
    combined = 0
    for record in written:
        if record.size >= 8 and record.head[:4] == _DESCRIPTOR_SIGNATURE:
            combined = _hash_combine(combined, int.from_bytes(record.head[4:8], "little"))
        if record.size:
            combined = _hash_combine(combined, record.crc32)
    return f"{name_hash}{combined:020d}"


@dataclass(frozen=True)
class _EndRecords:
    version_name: str
    version: bytes
    id_name: str
    name_hash: str


@functools.lru_cache(maxsize=64)
def _end_of_file_records(names: tuple[str, ...], alignment: int) -> _EndRecords:
    """What torch's own writer appends after these records: asked of torch itself, with empty records.

    The name half of the serialization id hashes the names (without the folder) in the order of a C++
    hash set, which only torch's build knows; empty records give the same names, and the CRC half is
    ours to add.
    """
    buffer = io.BytesIO()
    writer = torch._C.PyTorchFileWriter(buffer, True, alignment)
    for name in names:
        writer.write_record(name, b"", 0)
    writer.write_end_of_file()
    identifier = writer.serialization_id()
    with zipfile.ZipFile(buffer) as probe:
        (version_info, id_info) = probe.infolist()[len(names) :]
        version = probe.read(version_info)
    prefix = version_info.filename.index("/") + 1
    if len(identifier) != 40 or not identifier.isdigit():
        raise RuntimeError(f"torch's serialization id has an unknown shape: {identifier!r}")
    return _EndRecords(
        version_name=version_info.filename[prefix:],
        version=version,
        id_name=id_info.filename[prefix:],
        name_hash=identifier[:20],
    )
