"""Load an untrusted checkpoint without running any code from it.

torch files go through ``torch.load(weights_only=True)`` (memory-mapped for the zip format) after their
member list was checked; safetensors files are validated by the safetensors library and mapped zero-copy.
"""

from __future__ import annotations

import json
import mmap
import pickle
import re
import struct
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from app.checkpoints.allowlist import module_pickle_globals
from app.checkpoints.formats import CheckpointFormat, detect_format
from app.checkpoints.limits import ReadLimits
from app.checkpoints.zipcheck import check_torch_zip
from app.errors import LimitExceeded, UnreadableCheckpoint, UnsafeCheckpoint

# torch.serialization.safe_globals changes process-wide state; loads that extend it take turns.
_SAFE_GLOBALS_LOCK = threading.Lock()
_UNSUPPORTED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")

_SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64,
}  # fmt: skip


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
    if fmt == "torch_zip":
        check_torch_zip(path, limits)
        _refuse_unknown_globals_in_zip(path, module_classes)
    return LoadedCheckpoint(format=fmt, content=_torch_load(path, fmt, module_classes))


def _refuse_unknown_globals_in_zip(path: Path, module_classes: Iterable[type[nn.Module]]) -> None:
    try:
        # Parses data.pkl's opcodes only; returns the globals torch does not already allow.
        names = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception as exc:
        raise UnreadableCheckpoint(f"The checkpoint's pickle is malformed: {_first_line(exc)}") from None
    refused = sorted(names - set(module_pickle_globals(module_classes)))
    if refused:
        raise UnsafeCheckpoint(
            f"The checkpoint needs {', '.join(refused)}, which is not allow-listed; nothing of it was run. "
            "Save model.state_dict() instead of the whole model, or register the architecture.",
            {"globals": refused},
        )


def _torch_load(path: Path, fmt: CheckpointFormat, module_classes: Iterable[type[nn.Module]]) -> Any:
    extra: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = [
        (obj, name) for name, obj in module_pickle_globals(module_classes).items()
    ]
    try:
        with _SAFE_GLOBALS_LOCK, torch.serialization.safe_globals(extra):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=fmt == "torch_zip")
    except pickle.UnpicklingError as exc:
        match = _UNSUPPORTED_GLOBAL.search(str(exc))
        if match:
            raise UnsafeCheckpoint(
                f"The checkpoint needs {match.group(1)}, which is not allow-listed; nothing of it was run.",
                {"globals": [match.group(1)]},
            ) from None
        raise UnreadableCheckpoint(
            f"The checkpoint could not be unpickled safely: {_first_line(exc)}"
        ) from None
    except Exception as exc:
        # torch's readers raise all sorts on damaged input (IndexError, AssertionError, RuntimeError ...).
        raise UnreadableCheckpoint(f"The checkpoint is truncated or corrupt: {_first_line(exc)}") from None


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
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnreadableCheckpoint(f"The safetensors header is not valid UTF-8 JSON ({exc}).") from None
    if not isinstance(header, dict):
        raise UnreadableCheckpoint("The safetensors header is not a JSON object.")
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
