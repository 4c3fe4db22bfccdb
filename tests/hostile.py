"""Hostile files for the tests, written here (no real malware): each would touch a marker file if run."""

from __future__ import annotations

import ctypes
import fractions
import importlib
import io
import json
import os
import pickle
import runpy
import struct
import subprocess
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from tests.checkpoints import SimpleModel


class Gadget:
    """Unpickling this runs ``func(*args)``; every variant tries to create ``marker``."""

    def __init__(self, func: Any, args: tuple[Any, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


def gadgets(marker: Path) -> dict[str, Gadget]:
    touch = f"touch {marker}"
    script = marker.with_suffix(".py")
    return {
        "os.system": Gadget(os.system, (touch,)),
        "subprocess.call": Gadget(subprocess.call, (["touch", str(marker)],)),
        "builtins.eval": Gadget(eval, (f"open({str(marker)!r}, 'w')",)),
        "builtins.exec": Gadget(exec, (f"open({str(marker)!r}, 'w')",)),
        "importlib.import_module": Gadget(importlib.import_module, ("this",)),
        "runpy.run_path": Gadget(runpy.run_path, (str(script),)),
        "ctypes.CDLL": Gadget(ctypes.CDLL, ("libc.so.6",)),
        # harmless, but not allow-listed: refused all the same
        "fractions.Fraction": Gadget(fractions.Fraction, (1, 3)),
    }


def torch_zip_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def rebuild_zip(original: bytes, edit: Any, compression: int = zipfile.ZIP_STORED) -> bytes:
    """Copy a torch zip member by member through ``edit(name, data) -> list[(name, data)]``."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(original)) as source,
        zipfile.ZipFile(out, "w", compression) as target,
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names, which is the point
        for info in source.infolist():
            for name, data in edit(info.filename, source.read(info.filename)):
                target.writestr(name, data)
    return out.getvalue()


def torchscript_bytes() -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(SimpleModel()), buffer)
    return buffer.getvalue()


def hostile_files(marker: Path) -> dict[str, bytes]:
    valid = torch_zip_bytes(SimpleModel().state_dict())
    files: dict[str, bytes] = {}
    for name, gadget in gadgets(marker).items():
        files[f"raw-pickle-{name}"] = pickle.dumps(gadget, protocol=2)
        files[f"zip-{name}"] = torch_zip_bytes({"model_state_dict": SimpleModel().state_dict(), "x": gadget})
        legacy = io.BytesIO()
        torch.save({"x": gadget}, legacy, _use_new_zipfile_serialization=False)
        files[f"legacy-{name}"] = legacy.getvalue()
    files["protocol-0-pickle"] = pickle.dumps(gadgets(marker)["os.system"], protocol=0)
    files["torchscript"] = torchscript_bytes()
    files["duplicate-data-pkl"] = rebuild_zip(
        valid, lambda n, d: [(n, d), (n, d)] if n.endswith("data.pkl") else [(n, d)]
    )
    files["zip-slip"] = rebuild_zip(valid, lambda n, d: [(n, d), ("archive/../../escaped.txt", b"x")])
    files["absolute-member"] = rebuild_zip(valid, lambda n, d: [(n, d), ("/tmp/absolute.txt", b"x")])
    files["deflate-bomb"] = rebuild_zip(
        valid,
        lambda n, d: (
            [(n, d)]
            + (
                [(n.rsplit("/", 2)[0] + "/data/99", bytes(64 * 1024 * 1024))]
                if n.endswith("data.pkl")
                else []
            )
        ),
        compression=zipfile.ZIP_DEFLATED,
    )
    files["bad-crc"] = _flip_in_member(valid, "data.pkl")
    files["lying-size"] = _lie_about_size(valid)
    files.update(malformed_safetensors())
    files["random-bytes"] = os.urandom(4096)
    files["truncated"] = valid[: len(valid) // 2]
    files["text"] = b"hello, I am not a model\n"
    return files


def _flip_in_member(archive: bytes, suffix: str) -> bytes:
    """Change one byte inside a stored member without updating its CRC."""
    with zipfile.ZipFile(io.BytesIO(archive)) as source:
        info = next(i for i in source.infolist() if i.filename.endswith(suffix))
    local_extra = struct.unpack("<H", archive[info.header_offset + 28 : info.header_offset + 30])[0]
    start = info.header_offset + 30 + len(info.filename.encode()) + local_extra
    data = bytearray(archive)
    data[start + 2] ^= 0x01
    return bytes(data)


def _lie_about_size(archive: bytes) -> bytes:
    """Declare a tensor member far larger than the file in the central directory."""
    data = bytearray(archive)
    position = data.find(b"PK\x01\x02")
    while position != -1:
        name_length = struct.unpack("<H", data[position + 28 : position + 30])[0]
        name = bytes(data[position + 46 : position + 46 + name_length])
        if b"/data/" in name:
            data[position + 24 : position + 28] = struct.pack("<I", 0x7FFFFFF0)
            break
        position = data.find(b"PK\x01\x02", position + 4)
    return bytes(data)


def _safetensors(header: object, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def malformed_safetensors() -> dict[str, bytes]:
    f32 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    return {
        "st-header-past-eof": struct.pack("<Q", 10**9) + b'{"a": 1}',
        "st-header-over-limit": struct.pack("<Q", 200 * 1024 * 1024) + b"{" + b" " * 64,
        "st-overlapping": _safetensors({"a": f32, "b": f32}, b"\0" * 8),
        "st-gapped": _safetensors({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8),
        "st-out-of-range": _safetensors(
            {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8
        ),
        "st-shape-overflow": _safetensors(
            {"a": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 8]}}, b"\0" * 8
        ),
        "st-bad-dtype": _safetensors({"a": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8),
        "st-non-utf8": struct.pack("<Q", 6) + b'{"\xff":1}',
        "st-trailing-bytes": _safetensors({"a": f32}, b"\0" * 12),
    }
