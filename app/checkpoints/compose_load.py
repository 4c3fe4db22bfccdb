"""Load a composed torch.save archive the way ``torch.load(weights_only=True, mmap=True)`` would, with
each storage a memory map of its tensor blob: the proof of a composed file reads no tensor byte it does
not use and never writes the file out.

The archive is read through the recipe: the member table from its central directory (checked by
``zipfile``), the pickle's CRC checked, and every ``data/<key>`` member required to be exactly one range
of one tensor blob at the place the zip says, before torch's weights-only unpickler runs.
"""

from __future__ import annotations

import bisect
import io
import struct
import zipfile
from collections.abc import Callable
from typing import Any, cast

import torch
import torch._weights_only_unpickler as weights_only

from app.storage.composed import BlobPaths, BlobRange, ComposedReader, Literal, Recipe, RecipeError

_LOCAL_HEADER = struct.Struct("<4s22xHH")


class _Members:
    """Where each member's data lies in the composed file, and which piece holds it."""

    def __init__(self, recipe: Recipe, reader: ComposedReader) -> None:
        self._recipe = recipe
        self._starts: list[int] = []
        position = 0
        for piece in recipe.pieces:
            self._starts.append(position)
            position += piece.length
        with zipfile.ZipFile(reader) as archive:
            self.infos = {info.filename: info for info in archive.infolist()}
            roots = {name.split("/", 1)[0] for name in self.infos}
            if len(roots) != 1:
                raise RecipeError("the composed archive does not have torch.save's single folder")
            self.root = roots.pop()
            self.pickle = archive.read(f"{self.root}/data.pkl")  # CRC checked by zipfile
            byteorder = f"{self.root}/byteorder"
            self.byteorder = archive.read(byteorder) if byteorder in self.infos else b"little"
        self._reader = reader

    def data_start(self, name: str) -> int:
        info = self.infos[name]
        self._reader.seek(info.header_offset)
        signature, name_length, extra_length = _LOCAL_HEADER.unpack(self._reader.read(_LOCAL_HEADER.size))
        if signature != b"PK\x03\x04":
            raise RecipeError(f"the composed member {name} has no local header where the directory says")
        start: int = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
        return start

    def blob_range(self, name: str) -> tuple[BlobRange | None, int]:
        """The blob range that holds member ``name`` whole (None for an empty member), and its size."""
        size = self.infos[name].file_size
        if size == 0:
            return None, 0
        start = self.data_start(name)
        index = bisect.bisect_right(self._starts, start) - 1
        piece = self._recipe.pieces[index]
        within = start - self._starts[index]
        if isinstance(piece, Literal) or within + size > piece.length:
            raise RecipeError(f"the composed member {name} is not one range of one tensor blob")
        return BlobRange(piece.sha256, piece.offset + within, size), size


def load_composed_torch(recipe: Recipe, blobs: BlobPaths) -> Any:
    """The object a composed ``.pt`` recipe holds, storages mapped from the blobs (copy on write)."""
    with ComposedReader(recipe, blobs) as reader:
        members = _Members(recipe, reader)
        if members.byteorder != b"little":
            raise RecipeError("the composed archive is not little-endian")
        mapped: dict[str, torch.UntypedStorage] = {}
        loaded: dict[str, torch.storage.TypedStorage] = {}

        def storage_for(key: str, dtype: torch.dtype, numel: int) -> torch.storage.TypedStorage:
            name = f"{members.root}/data/{key}"
            if name not in members.infos:
                raise RecipeError(f"the composed pickle names a storage ({key[:40]!r}) the archive lacks")
            found, size = members.blob_range(name)
            if size != numel * dtype.itemsize:
                raise RecipeError(f"the composed storage data/{key} is not {numel} elements of {dtype}")
            if found is None:
                untyped = torch.empty((0,), dtype=torch.uint8).untyped_storage()
            else:
                if found.sha256 not in mapped:
                    path = blobs.path_for(found.sha256)
                    mapped[found.sha256] = cast(
                        torch.UntypedStorage,
                        torch.UntypedStorage.from_file(str(path), shared=False, nbytes=path.stat().st_size),
                    )
                untyped = mapped[found.sha256][found.offset : found.offset + size]
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

        return _Unpickler(members.pickle, persistent_load).load()  # type: ignore[no-untyped-call]


class _Unpickler(weights_only.Unpickler):
    """torch's weights-only unpickler (what ``torch.load(weights_only=True)`` runs), storages ours."""

    def __init__(self, data: bytes, load_storage: Callable[[Any], torch.storage.TypedStorage]) -> None:
        super().__init__(io.BytesIO(data))
        self._load_storage = load_storage

    def persistent_load(self, saved_id: Any) -> torch.storage.TypedStorage:
        return self._load_storage(saved_id)
