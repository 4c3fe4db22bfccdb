"""Load a torch.save zip archive: our unpickler on data.pkl, storages as views on the file's own records.

torch's C++ reader is not used on uploads: it resolves a persistent id ``"0\\x00x"`` to ``data/0``, maps a
storage larger than its record onto the bytes that follow, and honours device names such as ``meta``.
Here a storage must name an existing record exactly (``data/<digits>``), be exactly that record's size,
live on a real device (it is loaded onto the CPU), and every record must be used.
"""

from __future__ import annotations

import io
import re
import struct
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from app.checkpoints.limits import ReadLimits
from app.checkpoints.pickle_globals import StorageKind, TensorRules
from app.checkpoints.unpickler import refused_globals, unpickle
from app.checkpoints.zipcheck import ZipSummary, check_torch_zip
from app.errors import UnreadableCheckpoint

_RECORD_KEY = re.compile(r"^[0-9]{1,12}$")
_LOCATION = re.compile(r"^(cpu|cuda|mps|xpu|hpu|npu)(:[0-9]{1,4})?$")
_LOCAL_HEADER = struct.Struct("<4s22xHH")


def storage_location(location: Any) -> str:
    """A device name a real machine has; the tensor is loaded onto the CPU either way."""
    if isinstance(location, bytes):
        location = location.decode("ascii", "replace")
    if not isinstance(location, str) or not _LOCATION.match(location):
        raise UnreadableCheckpoint(
            f"A storage of the checkpoint is placed on {str(location)[:40]!r}, which is not a device "
            "(expected cpu, cuda or cuda:N, mps); its bytes cannot be trusted to be in the file."
        )
    return location


def load_torch_zip(path: Path, *, limits: ReadLimits, module_classes: Iterable[type[nn.Module]]) -> Any:
    summary = check_torch_zip(path, limits)
    rules = TensorRules()
    allowed = rules.globals(module_classes)
    with zipfile.ZipFile(path) as archive:
        pickle_bytes = archive.read(summary.pickle_member)  # zipfile checks its CRC
        byteorder = archive.read(f"{summary.root}/byteorder") if summary.has_byteorder else b"little"
    if byteorder.strip() != b"little":
        raise UnreadableCheckpoint(
            "The checkpoint was saved on a big-endian machine; re-save it on x86 or ARM."
        )
    offsets = _record_offsets(path, summary)
    whole = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=path.stat().st_size)
    loaded: dict[str, torch.storage.TypedStorage] = {}

    def persistent_load(pid: Any) -> torch.storage.TypedStorage:
        if not isinstance(pid, tuple) or len(pid) != 5 or pid[0] not in ("storage", b"storage"):
            raise UnreadableCheckpoint(
                "The checkpoint's pickle refers to external data that is not a storage."
            )
        _tag, kind, key, location, numel = pid
        if not isinstance(kind, StorageKind):
            raise UnreadableCheckpoint("The checkpoint's pickle names a storage type that is not one.")
        if not isinstance(key, str) or not _RECORD_KEY.match(key) or key not in offsets:
            raise UnreadableCheckpoint(
                f"The checkpoint refers to the storage {str(key)[:40]!r}, which the archive does not hold."
            )
        storage_location(location)
        start, size = offsets[key]
        if type(numel) is not int or numel * kind.dtype.itemsize != size:
            raise UnreadableCheckpoint(
                f"The storage data/{key} is declared as {numel} elements of {kind.dtype} but its record "
                f"holds {size} bytes; the file is corrupt."
            )
        if key not in loaded:
            view = whole[start : start + size]
            loaded[key] = rules.register(
                torch.storage.TypedStorage(wrap_storage=view, dtype=kind.dtype, _internal=True)  # type: ignore[no-untyped-call]
            )
        elif loaded[key].dtype != kind.dtype:
            raise UnreadableCheckpoint(f"The storage data/{key} is declared with two different dtypes.")
        return loaded[key]

    content = unpickle(
        io.BytesIO(pickle_bytes),
        globals_=allowed,
        persistent_load=persistent_load,
        also_refused=refused_globals(pickle_bytes, allowed),
    )
    unused = sorted(set(offsets) - set(loaded), key=int)
    if unused:
        raise UnreadableCheckpoint(
            f"The archive holds {len(unused)} record(s) no tensor uses (e.g. data/{unused[0]}); "
            "torch.save never writes those, so the file was altered."
        )
    return content


def _record_offsets(path: Path, summary: ZipSummary) -> dict[str, tuple[int, int]]:
    """Where each ``data/N`` record's bytes start in the file, read from its local header."""
    offsets: dict[str, tuple[int, int]] = {}
    with path.open("rb") as handle:
        for name, header_offset, size in summary.records:
            handle.seek(header_offset)
            signature, name_length, extra_length = _LOCAL_HEADER.unpack(handle.read(_LOCAL_HEADER.size))
            local_name = handle.read(name_length).decode("utf-8", "replace")
            if signature != b"PK\x03\x04" or local_name != f"{summary.root}/data/{name}":
                raise UnreadableCheckpoint(
                    f"The zip member data/{name} has a local header that disagrees with the directory."
                )
            start = header_offset + _LOCAL_HEADER.size + name_length + extra_length
            if start + size > summary.file_size:
                raise UnreadableCheckpoint(f"The zip member data/{name} runs past the end of the file.")
            offsets[name] = (start, size)
    return offsets
