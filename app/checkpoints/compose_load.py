"""Load composed downloads the way a user's library reads them, each tensor a memory map of its blob:
the proof of a composed file reads no tensor byte it does not use and never writes the file out.

``.pt``: the member table from the central directory (checked by ``zipfile``), the pickle's CRC checked,
every ``data/<key>`` member exactly one range of one tensor blob where its local header says, then torch's
weights-only unpickler (what ``torch.load(weights_only=True)`` runs). ``.safetensors``: the header checked
by the safetensors library itself, then each tensor one range of one blob.
"""

from __future__ import annotations

import io
import json
import struct
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
import torch._weights_only_unpickler as weights_only
from safetensors import SafetensorError, safe_open

from app.storage.composed import BlobPaths, BlobRange, ComposedReader, Recipe, RecipeError, locate

_LOCAL_HEADER = struct.Struct("<4s22xHH")
_SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "F8_E4M3FNUZ": torch.float8_e4m3fnuz, "F8_E5M2FNUZ": torch.float8_e5m2fnuz, "C64": torch.complex64,
    "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64,
}  # fmt: skip


class _BlobMaps:
    """Each blob mapped once, copy-on-write: tensors are views on the page cache, never copies."""

    def __init__(self, blobs: BlobPaths) -> None:
        self._blobs = blobs
        self._mapped: dict[str, torch.UntypedStorage] = {}

    def storage(self, found: BlobRange) -> torch.UntypedStorage:
        if found.sha256 not in self._mapped:
            path = self._blobs.path_for(found.sha256)
            self._mapped[found.sha256] = cast(
                torch.UntypedStorage,
                torch.UntypedStorage.from_file(str(path), shared=False, nbytes=path.stat().st_size),
            )
        whole = self._mapped[found.sha256]
        if found.offset + found.length > whole.nbytes():
            raise RecipeError(f"tensor blob {found.sha256} is shorter than the recipe says")
        return cast(torch.UntypedStorage, whole[found.offset : found.offset + found.length])


def _empty_storage() -> torch.UntypedStorage:
    return torch.empty((0,), dtype=torch.uint8).untyped_storage()


def load_composed_torch(recipe: Recipe, blobs: BlobPaths) -> Any:
    """The object a composed ``.pt`` recipe holds, storages mapped from the blobs."""
    maps = _BlobMaps(blobs)
    with ComposedReader(recipe, blobs) as reader, zipfile.ZipFile(reader) as archive:
        infos = {info.filename: info for info in archive.infolist()}
        roots = {name.split("/", 1)[0] for name in infos}
        if len(roots) != 1:
            raise RecipeError("the composed archive does not have torch.save's single folder")
        root = roots.pop()
        pickle_bytes = archive.read(f"{root}/data.pkl")  # CRC checked by zipfile
        if f"{root}/byteorder" in infos and archive.read(f"{root}/byteorder") != b"little":
            raise RecipeError("the composed archive is not little-endian")

        def data_start(info: zipfile.ZipInfo) -> int:
            reader.seek(info.header_offset)
            signature, name_length, extra_length = _LOCAL_HEADER.unpack(reader.read(_LOCAL_HEADER.size))
            if signature != b"PK\x03\x04":
                raise RecipeError(f"the composed member {info.filename} has no local header there")
            start: int = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
            return start

        loaded: dict[str, torch.storage.TypedStorage] = {}

        def storage_for(key: str, dtype: torch.dtype, numel: int) -> torch.storage.TypedStorage:
            info = infos.get(f"{root}/data/{key}")
            if info is None:
                raise RecipeError(f"the composed pickle names a storage ({key[:40]!r}) the archive lacks")
            if info.file_size != numel * dtype.itemsize:
                raise RecipeError(f"the composed storage data/{key} is not {numel} elements of {dtype}")
            untyped = (
                maps.storage(locate(recipe, data_start(info), info.file_size))
                if info.file_size
                else _empty_storage()
            )
            return torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)  # type: ignore[no-untyped-call]

        def persistent_load(saved_id: Any) -> torch.storage.TypedStorage:
            if (
                not isinstance(saved_id, tuple)
                or len(saved_id) != 5
                or saved_id[0] not in ("storage", b"storage")
            ):
                raise RecipeError("the composed pickle refers to something that is not a storage")
            _tag, storage_type, key, _location, numel = saved_id
            dtype = torch.uint8 if storage_type is torch.UntypedStorage else storage_type.dtype
            if not isinstance(key, str) or type(numel) is not int:
                raise RecipeError("the composed pickle has a malformed storage reference")
            if key not in loaded:
                loaded[key] = storage_for(key, dtype, numel)
            return loaded[key]

        return _Unpickler(pickle_bytes, persistent_load).load()  # type: ignore[no-untyped-call]


class _Unpickler(weights_only.Unpickler):
    """torch's weights-only unpickler (what ``torch.load(weights_only=True)`` runs), storages ours."""

    def __init__(self, data: bytes, load_storage: Callable[[Any], torch.storage.TypedStorage]) -> None:
        super().__init__(io.BytesIO(data))
        self._load_storage = load_storage

    def persistent_load(self, saved_id: Any) -> torch.storage.TypedStorage:
        return self._load_storage(saved_id)


def load_composed_safetensors(
    recipe: Recipe, blobs: BlobPaths, *, scratch: Path
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of a composed safetensors recipe, tensors mapped from the blobs.

    The safetensors library checks the header (dtypes, shapes, offsets covering the data exactly)
    against a sparse file in ``scratch`` that holds only the header: the size is right, no tensor
    byte is written.
    """
    with ComposedReader(recipe, blobs) as reader:
        prefix = reader.read(8)
        (header_length,) = struct.unpack("<Q", prefix)
        if header_length > recipe.size - 8:
            raise RecipeError("the composed safetensors header runs past the end of the file")
        header_bytes = reader.read(header_length)
    probe = scratch / f"header-{uuid.uuid4().hex}.safetensors"
    try:
        with probe.open("wb") as handle:
            handle.write(prefix + header_bytes)
            handle.truncate(recipe.size)
        with safe_open(str(probe), framework="pt") as checked:
            names = list(checked.keys())
            metadata = dict(checked.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise RecipeError(f"the composed safetensors header is invalid: {str(exc)[:300]}") from None
    finally:
        probe.unlink(missing_ok=True)
    header = _json_object(header_bytes)
    maps = _BlobMaps(blobs)
    data_start = 8 + header_length
    tensors: dict[str, torch.Tensor] = {}
    for name in names:
        info = header[name]
        dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
        if dtype is None:
            raise RecipeError(f"the composed safetensors dtype {info['dtype']!r} is not one torch holds")
        begin, end = info["data_offsets"]
        shape = [int(dim) for dim in info["shape"]]
        if end == begin:
            tensors[name] = torch.empty(shape, dtype=dtype)
            continue
        storage = maps.storage(locate(recipe, data_start + begin, end - begin))
        tensors[name] = torch.empty((0,), dtype=dtype).set_(storage, 0, shape, _contiguous_strides(shape))
    return tensors, metadata


def _contiguous_strides(shape: list[int]) -> list[int]:
    strides, step = [], 1
    for dim in reversed(shape):
        strides.append(step)
        step *= max(dim, 1)
    return strides[::-1]


def _json_object(data: bytes) -> dict[str, Any]:
    parsed = json.loads(data)
    if not isinstance(parsed, dict):
        raise RecipeError("the composed safetensors header is not a JSON object")
    return parsed
