"""ONNX artifacts past protobuf's 2 GB limit come as one zip (``<model>-v<n>.onnx.zip``: ``model.onnx`` and its
external data files). These helpers turn a downloaded ONNX artifact into a loadable ``.onnx`` path."""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import zipfile

from weightvault.cache import COPY_CHUNK_BYTES, place
from weightvault.errors import UnexpectedResponse

ZIP_MAGIC = b"PK\x03\x04"  # an ONNX protobuf starts with a field tag (0x08), never with this
_MEMBER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")


def is_bundle(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(len(ZIP_MAGIC)) == ZIP_MAGIC


def _model_member(bundle: zipfile.ZipFile) -> str:
    names = bundle.namelist()
    bad = [name for name in names if not _MEMBER.fullmatch(name)]
    models = [name for name in names if name.endswith(".onnx")]
    if bad or len(models) != 1:
        raise UnexpectedResponse(f"The ONNX bundle holds {names[:5]}, not one .onnx file and its data files.")
    return models[0]


def extract(blob: Path, folder: Path, model_name: str | None = None) -> Path:
    """Extract a bundle into ``folder`` (data files keep their names, which the model refers to);
    the model file is named ``model_name`` if given. Each file is written whole or not at all."""
    import zipfile  # here, not at the top: every command would pay for it at start

    with zipfile.ZipFile(blob) as bundle:
        member = _model_member(bundle)
        folder.mkdir(parents=True, exist_ok=True)
        for name in bundle.namelist():
            target = folder / (model_name if name == member and model_name else name)
            tmp = folder / f".{target.name}.{secrets.token_hex(6)}.tmp"
            try:
                with bundle.open(name) as source, tmp.open("xb") as sink:
                    shutil.copyfileobj(source, sink, COPY_CHUNK_BYTES)
                os.replace(tmp, target)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
    return folder / (model_name or member)


def cached_model(blob: Path, folder: Path) -> Path:
    """The bundle's model extracted once into ``folder`` (a cache directory named by the bundle's sha256)."""
    if folder.is_dir():
        import zipfile  # here, not at the top: every command would pay for it at start

        with zipfile.ZipFile(blob) as bundle:
            return folder / _model_member(bundle)
    staging = folder.parent / f".{folder.name}.{secrets.token_hex(6)}"
    try:
        model = extract(blob, staging)
        try:
            staging.rename(folder)
        except OSError:  # another process extracted it first
            shutil.rmtree(staging)
        return folder / model.name
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def local_model(blob: Path, *, extracted: Path, output: Path | None) -> Path:
    """A loadable ``.onnx`` path for a downloaded ONNX artifact: ``output`` if given, else in the cache's
    folder for it (``Cache.extracted``)."""
    if not is_bundle(blob):
        return blob if output is None else place(blob, output)
    if output is None:
        return cached_model(blob, extracted)
    return extract(blob, output.parent, output.name)
