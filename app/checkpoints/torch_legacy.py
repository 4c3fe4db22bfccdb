"""Load a legacy (pre-1.6, or ``_use_new_zipfile_serialization=False``) torch checkpoint.

The format is a run of pickles (magic number, protocol version, system info, the object, the list of
storage keys) followed by each storage's bytes as ``<int64 element count><data>``. torch allocates each
storage when the object's pickle names it and fills it later from the data; a storage the key list
leaves out stays uninitialised heap memory, and a declared size is allocated whatever the file holds.
Here every declared storage must fit in the bytes the file still has, every one must be filled exactly
once in order, and nothing may follow the last.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from app.checkpoints.limits import ReadLimits
from app.checkpoints.pickle_globals import StorageKind, TensorRules
from app.checkpoints.torch_zip import storage_location
from app.checkpoints.unpickler import BoundedReader, unpickle
from app.errors import UnreadableCheckpoint

_MAGIC = 0x1950A86A20F9469CFC6C
_PROTOCOL_VERSION = 1001
_COUNT = struct.Struct("<q")


def load_torch_legacy(path: Path, *, limits: ReadLimits, module_classes: Iterable[type[nn.Module]]) -> Any:
    file_size = path.stat().st_size
    rules = TensorRules()
    allowed = rules.globals(module_classes)
    module_guards = {id(value) for value in allowed.values() if isinstance(value, type)}
    declared: dict[str, torch.storage.TypedStorage] = {}
    declared_bytes = 0

    def persistent_load(pid: Any) -> Any:
        nonlocal declared_bytes
        if isinstance(pid, tuple) and len(pid) == 4 and pid[0] == "module":
            # torch.save(model) names each module class this way; the class was already allow-listed.
            if id(pid[1]) not in module_guards:
                raise UnreadableCheckpoint("The checkpoint's pickle refers to a module class it may not use.")
            return pid[1]
        if not isinstance(pid, tuple) or len(pid) != 6 or pid[0] != "storage":
            raise UnreadableCheckpoint(
                "The checkpoint's pickle refers to external data that is not a storage."
            )
        _tag, kind, key, location, numel, view = pid
        if not isinstance(kind, StorageKind) or not isinstance(key, str) or len(key) > 64:
            raise UnreadableCheckpoint("The checkpoint's pickle declares a storage it does not describe.")
        if view is not None:
            raise UnreadableCheckpoint(
                "The checkpoint uses storage views of torch < 0.4; load and re-save it with a current torch."
            )
        storage_location(location)
        if key in declared:
            same_size = declared[key]._untyped_storage.nbytes() == numel * kind.dtype.itemsize
            if declared[key].dtype != kind.dtype or not same_size:
                raise UnreadableCheckpoint(f"The storage {key!r} is declared twice, differently.")
            return declared[key]
        if type(numel) is not int or numel < 0:
            raise UnreadableCheckpoint(f"The storage {key!r} declares {str(numel)[:40]} elements.")
        declared_bytes += numel * kind.dtype.itemsize + _COUNT.size
        if declared_bytes > file_size:
            raise UnreadableCheckpoint(
                f"The checkpoint declares storages of {declared_bytes} bytes but the whole file is "
                f"{file_size} bytes; their data cannot be in it (truncated or forged)."
            )
        # Filled from the file below before anything reads it; refused if it is not.
        storage = torch.storage.TypedStorage(numel, dtype=kind.dtype, _internal=True)  # type: ignore[no-untyped-call]
        declared[key] = rules.register(storage)
        return storage

    with path.open("rb") as handle:
        reader = BoundedReader(handle, file_size)
        header = [unpickle(reader, globals_={}) for _ in range(3)]
        if (
            header[0] != _MAGIC
            or header[1] != _PROTOCOL_VERSION
            or not isinstance(header[2], dict)
            or header[2].get("little_endian") is not True
        ):
            raise UnreadableCheckpoint("The legacy checkpoint's header is not one torch.save writes.")
        content = unpickle(reader, globals_=allowed, persistent_load=persistent_load)
        keys = unpickle(reader, globals_={})
        if not isinstance(keys, list) or sorted(keys) != sorted(declared) or len(set(keys)) != len(keys):
            missing = sorted(set(declared) - set(keys if isinstance(keys, list) else []))
            raise UnreadableCheckpoint(
                "The legacy checkpoint's storage list does not match the storages its tensors use"
                + (f" ({len(missing)} never filled, e.g. {missing[0]!r})" if missing else "")
                + "; their bytes would be uninitialised memory."
            )
        for key in keys:
            _fill(handle, declared[key], key)
        if handle.tell() != file_size:
            raise UnreadableCheckpoint(
                f"The legacy checkpoint has {file_size - handle.tell()} bytes after its last storage; "
                "torch.save writes nothing there."
            )
    return content


def _fill(handle: IO[bytes], storage: torch.storage.TypedStorage, key: str) -> None:
    raw = handle.read(_COUNT.size)
    nbytes = storage._untyped_storage.nbytes()
    if len(raw) != _COUNT.size or _COUNT.unpack(raw)[0] * storage.dtype.itemsize != nbytes:
        raise UnreadableCheckpoint(
            f"The storage {key!r} is truncated or its size does not match its declaration."
        )
    if nbytes:
        target = torch.empty((0,), dtype=torch.uint8).set_(storage._untyped_storage)
        if handle.readinto(target.numpy()) != nbytes:  # type: ignore[attr-defined]
            raise UnreadableCheckpoint(f"The storage {key!r} is truncated.")
