"""Check a torch.save zip archive's member list before torch reads any of it."""

from __future__ import annotations

import re
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from app.checkpoints.limits import ReadLimits
from app.errors import LimitExceeded, UnreadableCheckpoint, UnsafeCheckpoint

# Members torch.save writes inside its single top-level folder.
_KNOWN_MEMBERS = re.compile(
    r"^(data\.pkl|byteorder|version|\.format_version|\.storage_alignment|\.data/version"
    r"|\.data/serialization_id|data/[0-9]{1,12})$"
)
_TORCHSCRIPT_MARKERS = ("constants.pkl", "code/", ".data/ts_code/", "attributes.pkl")


_MAX_ROOT_CHARS = 255
_END_OF_DIRECTORY = struct.Struct("<4s16sH")


@dataclass(frozen=True)
class ZipSummary:
    root: str
    pickle_member: str
    file_size: int
    has_byteorder: bool
    # (record key, local header offset, size) of every data/N member
    records: list[tuple[str, int, int]] = field(default_factory=list)


def check_torch_zip(path: Path, limits: ReadLimits) -> ZipSummary:
    """Raise unless the archive has exactly the shape torch.save gives it."""
    with path.open("rb") as handle:
        return check_torch_zip_file(handle, path.stat().st_size, limits)


def check_torch_zip_file(handle: BinaryIO, file_size: int, limits: ReadLimits) -> ZipSummary:
    """``check_torch_zip`` on any seekable binary file of ``file_size`` bytes (a composed download is
    checked through its reader, never written out)."""
    _check_nothing_after_directory(handle, file_size)
    try:
        with zipfile.ZipFile(handle) as archive:
            infos = archive.infolist()
            summary = _check_members(infos, file_size, limits)
            # Reading through zipfile verifies the pickle's CRC; torch's own reader does not.
            archive.read(summary.pickle_member)
    except zipfile.BadZipFile as exc:
        raise UnreadableCheckpoint(f"The zip archive is corrupt or truncated ({exc}).") from None
    except (OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as exc:
        raise UnreadableCheckpoint(f"The zip archive could not be read ({exc}).") from None
    return summary


def _check_members(infos: list[zipfile.ZipInfo], file_size: int, limits: ReadLimits) -> ZipSummary:
    if not infos:
        raise UnreadableCheckpoint("The zip archive is empty; torch.save archives hold a data.pkl.")
    if len(infos) > limits.max_tensors + 16:
        raise LimitExceeded(
            f"The archive has {len(infos)} members; the limit is {limits.max_tensors} tensors.",
            {"limit": "max_tensors", "value": limits.max_tensors},
        )
    names = [info.filename for info in infos]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise UnreadableCheckpoint(
                f"The zip archive holds the member '{name[:200]}' twice; refusing an ambiguous file."
            )
        seen.add(name)
        parts = name.split("/")
        if name.startswith("/") or "\\" in name or ".." in parts or "" in parts[:-1] or ":" in parts[0]:
            raise UnreadableCheckpoint(
                f"The zip member name {name[:200]!r} points outside the archive folder."
            )
    roots = {name.split("/", 1)[0] for name in names}
    if len(roots) != 1 or any("/" not in name for name in names):
        raise UnreadableCheckpoint("The zip archive does not have torch.save's single top-level folder.")
    root = roots.pop()
    if len(root) > _MAX_ROOT_CHARS or not root.isprintable():
        raise UnreadableCheckpoint(
            f"The zip archive's folder name is {len(root)} characters of which some are not printable or "
            f"too many (at most {_MAX_ROOT_CHARS}); torch.save names it after the file."
        )
    relative = [name[len(root) + 1 :] for name in names]
    if any(rel == marker or rel.startswith(marker) for rel in relative for marker in _TORCHSCRIPT_MARKERS):
        raise UnsafeCheckpoint(
            "The file is a TorchScript archive, which carries code; upload torch.save(model.state_dict(), f) instead."
        )
    for rel in relative:
        if not _KNOWN_MEMBERS.match(rel):
            raise UnreadableCheckpoint(
                f"The zip archive has a member torch.save never writes: '{root}/{rel[:200]}'."
            )
    if "data.pkl" not in relative:
        raise UnreadableCheckpoint("The zip archive has no data.pkl; it was not written by torch.save.")
    for info in infos:
        if info.flag_bits & 0x1:
            raise UnreadableCheckpoint(
                f"The zip member '{info.filename}' is marked encrypted; torch.save never encrypts."
            )
        if info.compress_type != zipfile.ZIP_STORED:
            raise UnreadableCheckpoint(
                f"The zip member '{info.filename}' is compressed; torch.save stores members uncompressed."
            )
        if info.file_size != info.compress_size or info.file_size > file_size:
            raise UnreadableCheckpoint(
                f"The zip member '{info.filename}' declares a size that cannot be true."
            )
        if info.filename.endswith("/data.pkl") and info.file_size > limits.max_pickle_bytes:
            raise LimitExceeded(
                f"The checkpoint's pickle is {info.file_size} bytes; the limit is {limits.max_pickle_bytes}.",
                {"limit": "max_pickle_bytes", "value": limits.max_pickle_bytes},
            )
    _check_no_overlap(infos, file_size)
    data_prefix = f"{root}/data/"
    return ZipSummary(
        root=root,
        pickle_member=f"{root}/data.pkl",
        file_size=file_size,
        has_byteorder=f"{root}/byteorder" in seen,
        records=[
            (info.filename[len(data_prefix) :], info.header_offset, info.file_size)
            for info in infos
            if info.filename.startswith(data_prefix)
        ],
    )


def _check_nothing_after_directory(handle: BinaryIO, file_size: int) -> None:
    """torch.save ends the file with the end-of-directory record and no comment: anything after it
    (a second file glued on, as in zip/pickle polyglots) means the file is not what it claims."""
    if file_size < _END_OF_DIRECTORY.size:
        raise UnreadableCheckpoint("The zip archive is truncated (no end-of-directory record).")
    handle.seek(file_size - _END_OF_DIRECTORY.size)
    signature, _counts, comment_length = _END_OF_DIRECTORY.unpack(handle.read(_END_OF_DIRECTORY.size))
    if signature != b"PK\x05\x06" or comment_length:
        raise UnreadableCheckpoint(
            "The zip archive does not end with its directory: bytes were appended after it (or it is "
            "truncated); torch.save writes nothing there."
        )


def _check_no_overlap(infos: list[zipfile.ZipInfo], file_size: int) -> None:
    ordered = sorted(infos, key=lambda info: info.header_offset)
    for current, following in zip(ordered, [*ordered[1:], None], strict=True):
        end = current.header_offset + 30 + len(current.filename.encode()) + current.compress_size
        limit = following.header_offset if following is not None else file_size
        if end > limit:
            raise UnreadableCheckpoint(
                f"The zip member '{current.filename}' overlaps the next one; the archive is malformed."
            )
