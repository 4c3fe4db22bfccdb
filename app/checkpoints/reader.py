"""Load an untrusted checkpoint without running any code from it.

torch files are read by our own unpickler (``unpickler``, ``torch_zip``, ``torch_legacy``) with storages
built only from the file's bytes; safetensors files are validated by the safetensors library and mapped
zero-copy. Nothing here touches process-wide state, so loads never wait for one another.
"""

from __future__ import annotations

import json
import math
import mmap
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from app.checkpoints.formats import CheckpointFormat, detect_format
from app.checkpoints.limits import ReadLimits
from app.checkpoints.structure import check_structure
from app.checkpoints.torch_legacy import load_torch_legacy
from app.checkpoints.torch_zip import load_torch_zip
from app.errors import LimitExceeded, UnreadableCheckpoint

_SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64,
}  # fmt: skip
# A tensor entry is a name and three fields; __metadata__ entries are one pair each.
_MAX_METADATA_ENTRIES = 1024
_MAX_DIMS = 32


@dataclass
class LoadedCheckpoint:
    format: CheckpointFormat
    content: Any
    metadata: dict[str, str] = field(default_factory=dict)


def read_checkpoint(
    path: Path, *, limits: ReadLimits, module_classes: Iterable[type[nn.Module]] = ()
) -> LoadedCheckpoint:
    """Detect the format from the bytes and load the file; raise a ``CheckpointRejected`` if refused."""
    fmt = detect_format(path)
    if fmt == "safetensors":
        tensors, metadata = read_safetensors(path, limits=limits)
        return LoadedCheckpoint(format=fmt, content=tensors, metadata=metadata)
    load = load_torch_zip if fmt == "torch_zip" else load_torch_legacy
    content = load(path, limits=limits, module_classes=module_classes)
    check_structure(content)
    return LoadedCheckpoint(format=fmt, content=content)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line[:300]


def read_safetensors(path: Path, *, limits: ReadLimits) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors of a safetensors file as views on a private memory map (no copy, no anonymous memory)."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
        if header_len > limits.max_safetensors_header_bytes:
            raise LimitExceeded(
                f"The safetensors header is {header_len} bytes; the limit is {limits.max_safetensors_header_bytes}.",
                {"limit": "max_safetensors_header_bytes", "value": limits.max_safetensors_header_bytes},
            )
        if header_len > size - 8:
            raise UnreadableCheckpoint("The safetensors header length points past the end of the file.")
        raw = handle.read(header_len)
    # Parsing costs ~20x the text for tiny entries: count the entries first, from the bytes alone.
    pairs = raw.count(b":")
    if pairs > 4 * (limits.max_tensors + 1) + _MAX_METADATA_ENTRIES:
        raise LimitExceeded(
            f"The safetensors header holds about {pairs} entries; at most {limits.max_tensors} tensors and "
            f"{_MAX_METADATA_ENTRIES} metadata entries are read.",
            {"limit": "max_tensors", "value": limits.max_tensors},
        )
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnreadableCheckpoint(f"The safetensors header is not valid UTF-8 JSON ({exc}).") from None
    except RecursionError:
        raise UnreadableCheckpoint("The safetensors header is nested too deeply to be a header.") from None
    if not isinstance(header, dict):
        raise UnreadableCheckpoint("The safetensors header is not a JSON object.")
    _check_header(header)
    if len(header) > limits.max_tensors + 1:
        raise LimitExceeded(
            f"The safetensors file names {len(header) - 1} tensors; the limit is {limits.max_tensors}.",
            {"limit": "max_tensors", "value": limits.max_tensors},
        )
    # The library checks offsets, dtypes, shapes and coverage of the data section.
    try:
        with safe_open(str(path), framework="pt") as checked:
            names = list(checked.keys())
            metadata = dict(checked.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise UnreadableCheckpoint(f"The safetensors file is invalid: {_first_line(exc)}") from None
    data_start = 8 + header_len
    with path.open("rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY) if size > data_start else None
    tensors: dict[str, torch.Tensor] = {}
    for name in names:
        tensors[name] = _view(mapped, data_start, header[name])
    return tensors, metadata


def _check_header(header: Mapping[str, Any]) -> None:
    """The entries the library would accept but torch cannot hold (or we should not keep)."""
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or len(metadata) > _MAX_METADATA_ENTRIES:
        raise UnreadableCheckpoint(
            f"The safetensors __metadata__ must be a JSON object of at most {_MAX_METADATA_ENTRIES} entries."
        )
    for name, info in header.items():
        if name == "__metadata__":
            continue
        shape = info.get("shape") if isinstance(info, dict) else None
        dtype = _SAFETENSORS_DTYPES.get(info.get("dtype", "")) if isinstance(info, dict) else None
        if (
            not isinstance(shape, list)
            or len(shape) > _MAX_DIMS
            or not all(type(dim) is int and dim >= 0 for dim in shape)
        ):
            raise UnreadableCheckpoint(f"The safetensors tensor {name[:80]!r} has an invalid shape.")
        itemsize = dtype.itemsize if dtype is not None else 8
        # Every stride (the product of the trailing sizes) must fit torch's 64-bit index arithmetic.
        if any(math.prod(shape[index:]) * itemsize >= 2**62 for index in range(len(shape))):
            raise UnreadableCheckpoint(
                f"The safetensors tensor {name[:80]!r} has the shape {shape}, too large for any tensor."
            )


def _view(mapped: mmap.mmap | None, data_start: int, info: Mapping[str, Any]) -> torch.Tensor:
    dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
    if dtype is None:
        raise UnreadableCheckpoint(f"The safetensors dtype {info['dtype']!r} is not supported.")
    shape = [int(dim) for dim in info["shape"]]
    start, end = (int(offset) for offset in info["data_offsets"])
    if start == end or mapped is None:
        return torch.empty(shape, dtype=dtype)
    count = (end - start) // dtype.itemsize
    tensor = torch.frombuffer(mapped, dtype=dtype, count=count, offset=data_start + start).reshape(shape)
    # Kernels may assume element alignment; the rare misaligned tensor gets its own copy.
    return tensor.clone() if (data_start + start) % dtype.itemsize else tensor
