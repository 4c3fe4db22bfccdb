"""Hostile files for the tests, written here (no real malware): each would touch a marker file if run."""

from __future__ import annotations

import io
import os
import pickle
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
    return {
        "os.system": Gadget(os.system, (touch,)),
        "subprocess.call": Gadget(subprocess.call, (["touch", str(marker)],)),
        "builtins.eval": Gadget(eval, (f"open({str(marker)!r}, 'w')",)),
        "builtins.exec": Gadget(exec, (f"open({str(marker)!r}, 'w')",)),
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
    files["random-bytes"] = os.urandom(4096)
    files["truncated"] = valid[: len(valid) // 2]
    files["text"] = b"hello, I am not a model\n"
    return files
