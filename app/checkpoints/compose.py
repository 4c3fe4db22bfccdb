"""Recipes for the served formats, built from tensor blobs: torch.save's zip (``.pt``) and safetensors.

Each distinct storage becomes one tensor blob (its raw bytes, addressed by sha256: tied weights and
views share a storage, so they share a blob, and equal bytes anywhere are stored once). A recipe adds
only what the format puts around those bytes: torch's pickle and zip records, or the safetensors header.
Building a recipe reads each storage once (to hash it into a blob) and the composed bytes once (for
the file's sha256); nothing is written but new blobs.

A blob is a whole storage, as torch.save writes whole storages: give tensors storages of exactly their
own bytes first (``writer.own_storages``), or a view on an upload's memory map makes the map one blob.
"""

from __future__ import annotations

import json
import pickle
import struct
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch

from app.checkpoints.compose_zip import ZipRecord, torch_zip_pieces
from app.storage.composed import BlobPaths, BlobRange, Literal, Piece, Recipe
from app.storage.tensorblobs import TensorBlob, describe, storage_view

# safetensors orders tensors by its dtype enum, largest first, then by name; these are its names
# and that enum's order (safetensors 0.4-0.8).
_SAFETENSORS_DTYPES: dict[torch.dtype, tuple[str, int]] = {
    torch.bool: ("BOOL", 0),
    torch.uint8: ("U8", 2),
    torch.int8: ("I8", 3),
    torch.float8_e5m2: ("F8_E5M2", 4),
    torch.float8_e4m3fn: ("F8_E4M3", 5),
    torch.float8_e4m3fnuz: ("F8_E4M3FNUZ", 7),
    torch.float8_e5m2fnuz: ("F8_E5M2FNUZ", 8),
    torch.int16: ("I16", 9),
    torch.uint16: ("U16", 10),
    torch.float16: ("F16", 11),
    torch.bfloat16: ("BF16", 12),
    torch.int32: ("I32", 13),
    torch.uint32: ("U32", 14),
    torch.float32: ("F32", 15),
    torch.complex64: ("C64", 16),
    torch.float64: ("F64", 17),
    torch.int64: ("I64", 18),
    torch.uint64: ("U64", 19),
}
_HEADER_ALIGNMENT = 8
_EMPTY = describe(memoryview(b""))


class TensorSink(BlobPaths, Protocol):
    """Stores bytes as a tensor blob (once per content) and says where blobs are."""

    def add(self, data: memoryview) -> TensorBlob:
        """Describe ``data`` and store it unless stored; the write may still run on return, so ``data``
        must stay readable until ``finish``."""
        ...

    def finish(self) -> None:
        """Wait until every added blob is durable (and its bytes no longer read)."""
        ...


class StorageBlobs:
    """Each storage stored (and hashed) once, however many formats and tensors use it.

    Share one across the compose calls of an ingest so ``full.pt``, ``weights.pt`` and the safetensors
    file describe each weight once. A storage is known by its address and size: it keeps the storages
    it saw alive, so an address is never reused for other bytes while it remembers them, and their
    bytes must not change while it is in use.
    """

    def __init__(self, sink: TensorSink) -> None:
        self.sink = sink
        self._seen: dict[tuple[int, int], tuple[torch.UntypedStorage, TensorBlob]] = {}

    def blob_for(self, storage: torch.UntypedStorage) -> TensorBlob:
        if storage.nbytes() == 0:
            return _EMPTY  # an empty member has no range to read: no blob to store
        key = (storage.data_ptr(), storage.nbytes())
        if key not in self._seen:
            self._seen[key] = (storage, self.sink.add(storage_view(storage)))
        return self._seen[key][1]


def _storage_blobs(blobs: TensorSink | StorageBlobs) -> StorageBlobs:
    return blobs if isinstance(blobs, StorageBlobs) else StorageBlobs(blobs)


class _Records:
    """Stands in for torch's zip writer: keeps what ``torch.serialization._save`` hands it, in order,
    storages as the storage objects themselves (nothing is copied)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | torch.UntypedStorage]] = []

    def write_record(self, name: str, data: Any, size: int) -> None:
        if isinstance(data, str):
            data = data.encode()
        if isinstance(data, bytes | torch.UntypedStorage):
            self.records.append((name, data))
            return
        raise TypeError(f"torch.save handed over a record of type {type(data).__name__}")

    def write_record_metadata(self, name: str, size: int) -> None:
        raise RuntimeError("torch.serialization.skip_data is active; composing needs the storages")


def torch_records(obj: Any) -> list[tuple[str, bytes | torch.UntypedStorage]]:
    """The records ``torch.save(obj)`` writes before its end-of-file records, in its order: the
    pickle (torch's own pickler, persistent ids naming each storage's key), the small format records,
    and ``data/<key>`` for each storage."""
    records = _Records()
    save = getattr(torch.serialization, "_save")  # noqa: B009 - private, but it is torch.save's body
    save(obj, records, pickle, torch.serialization.DEFAULT_PROTOCOL, False)
    return records.records


def compose_torch(obj: Any, *, blobs: TensorSink | StorageBlobs, archive: str = "archive") -> Recipe:
    """The recipe of ``torch.save(obj, buffer)``: byte for byte the same file, storages kept as blobs.

    ``archive`` is the folder torch names after the file (``"archive"`` when saving to a buffer).
    """
    storages = _storage_blobs(blobs)
    return Recipe.build(torch_pieces(obj, blobs=storages, archive=archive), storages.sink)


def torch_pieces(obj: Any, *, blobs: TensorSink | StorageBlobs, archive: str = "archive") -> list[Piece]:
    """``compose_torch``'s pieces, not yet hashed (``recipe_hash.build_recipes`` hashes several at once)."""
    alignment = int(getattr(torch.serialization, "_get_storage_alignment")())  # noqa: B009
    storages = _storage_blobs(blobs)
    records = [
        ZipRecord(name, data if isinstance(data, bytes) else storages.blob_for(data))
        for name, data in torch_records(obj)
    ]
    return torch_zip_pieces(archive, records, alignment=alignment)


def compose_safetensors(
    weights: Mapping[str, torch.Tensor],
    *,
    blobs: TensorSink | StorageBlobs,
    tied_groups: Sequence[Sequence[str]] = (),
) -> Recipe:
    """The recipe of the safetensors file ``writer.write_safetensors`` writes for ``weights``."""
    storages = _storage_blobs(blobs)
    return Recipe.build(safetensors_pieces(weights, blobs=storages, tied_groups=tied_groups), storages.sink)


def safetensors_pieces(
    weights: Mapping[str, torch.Tensor],
    *,
    blobs: TensorSink | StorageBlobs,
    tied_groups: Sequence[Sequence[str]] = (),
) -> list[Piece]:
    """``compose_safetensors``'s pieces, not yet hashed.

    Tied names after the first of each group are left out and recorded in the metadata, as
    ``safetensors.torch.save_model`` does. A tensor that shares its storage with another, untied key
    still gets its own bytes in the file (a second range of the same blob, nothing more at rest).
    """
    removed = {name: group[0] for group in tied_groups for name in group[1:]}
    metadata = {"format": "pt", **removed}
    entries: list[tuple[str, torch.Tensor, Piece]] = []
    storages = _storage_blobs(blobs)
    for name, tensor in weights.items():
        if name in removed:
            continue
        if tensor.dtype not in _SAFETENSORS_DTYPES:
            raise ValueError(f"safetensors cannot hold {name!r} of dtype {tensor.dtype}")
        entries.append((name, tensor, _tensor_range(tensor.detach(), storages)))
    entries.sort(key=lambda entry: (-_SAFETENSORS_DTYPES[entry[1].dtype][1], entry[0].encode()))

    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name, tensor, piece in entries:
        header[name] = {
            "dtype": _SAFETENSORS_DTYPES[tensor.dtype][0],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + piece.length],
        }
        offset += piece.length
    encoded = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    encoded += b" " * (-len(encoded) % _HEADER_ALIGNMENT)
    pieces: list[Piece] = [Literal(struct.pack("<Q", len(encoded)) + encoded)]
    pieces += [piece for _name, _tensor, piece in entries]
    return pieces


def _tensor_range(tensor: torch.Tensor, storages: StorageBlobs) -> Piece:
    """The tensor's bytes as a range of its storage's blob, or of a blob of its own when its
    elements are not one contiguous run of the storage."""
    nbytes = tensor.numel() * tensor.element_size()
    if nbytes == 0:
        return Literal(b"")
    if tensor.is_contiguous():
        blob = storages.blob_for(tensor.untyped_storage())
        start = int(tensor.storage_offset()) * tensor.element_size()
        return BlobRange(sha256=blob.sha256, offset=start, length=nbytes)
    blob = storages.sink.add(storage_view(tensor.contiguous().untyped_storage()))
    return BlobRange(sha256=blob.sha256, offset=0, length=nbytes)
