"""What an upload is, read: one checkpoint file, or a save_pretrained folder (sent as parts, a tar or a zip)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from app.checkpoints.folder import (
    FolderFile,
    PretrainedFolder,
    is_folder_archive,
    sort_folder,
    unpack_archive,
)
from app.checkpoints.limits import ReadLimits
from app.checkpoints.reader import LoadedCheckpoint, read_checkpoint
from app.checkpoints.shards import read_shards


@dataclass(frozen=True)
class ReadUpload:
    loaded: LoadedCheckpoint
    # Set when the upload was a folder: its config, weights files and kept extras.
    folder: PretrainedFolder | None
    # Bytes of the weights files read (what the tensors must be proportionate to).
    weights_bytes: int


def upload_bytes(upload: Path) -> int:
    """The size of an upload: a file, or a directory of the parts of a folder upload."""
    if upload.is_dir():
        return sum(part.stat().st_size for part in upload.iterdir())
    return upload.stat().st_size


def read_upload(
    upload: Path, *, workdir: Path, limits: ReadLimits, module_classes: Iterable[type[nn.Module]] = ()
) -> ReadUpload:
    """Read ``upload`` (a file, or a directory holding a folder's files by name) under the reader's rules.

    A tar, or a zip that is not torch.save's own, is a folder: it is unpacked into ``workdir`` first.
    """
    if upload.is_dir():
        files = [
            FolderFile(name=part.name, path=part, size=part.stat().st_size)
            for part in sorted(upload.iterdir())
        ]
    elif is_folder_archive(upload):
        unpacked = workdir / "unpacked"
        unpacked.mkdir()
        files = unpack_archive(upload, unpacked, limits=limits)
    else:
        loaded = read_checkpoint(upload, limits=limits, module_classes=module_classes)
        return ReadUpload(loaded=loaded, folder=None, weights_bytes=upload.stat().st_size)
    folder = sort_folder(files, limits=limits)
    weight_map = json.loads(folder.index.path.read_bytes())["weight_map"] if folder.index else None
    loaded = read_shards(
        [(file.name, file.path) for file in folder.weights],
        weight_map=weight_map,
        limits=limits,
        module_classes=module_classes,
    )
    return ReadUpload(loaded=loaded, folder=folder, weights_bytes=sum(file.size for file in folder.weights))
