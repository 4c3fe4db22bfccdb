"""A version as a model folder (the ``hf`` artifact): written by the library, zipped, loaded back and proven."""

from __future__ import annotations

import zipfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from app.architectures.folders import FolderFormat
from app.architectures.spec import Architecture
from app.checkpoints.folder import FolderFile, PretrainedFolder
from app.checkpoints.validate import ForwardRun, identical_outputs, load_fresh, max_abs_diff, run_forward
from app.errors import ArchitectureMismatch
from app.storage.blobstore import sha256_file

DEFAULT_HF_SHARD_BYTES = 5 * 1000**3  # what save_pretrained uses ("5GB")
# Zip members get this time stamp: the artifact's bytes (and sha256) depend on its content alone.
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)


class FolderProofFailed(RuntimeError):
    """The folder we wrote did not load back to the upload's outputs: a server fault, never served."""


@dataclass(frozen=True)
class FolderArtifact:
    path: Path
    sha256: str
    validation: dict[str, Any]


def check_config(folder_format: FolderFormat, uploaded: Mapping[str, Any]) -> None:
    """Refuse a folder whose config.json would build different tensor shapes than the architecture."""
    differences = folder_format.config_differences(uploaded)
    if differences:
        first = differences[0]
        raise ArchitectureMismatch(
            f"The folder's config.json builds a different model than the architecture: '{first['key']}' is "
            f"{first['got']!r} there and {first['expected']!r} in the registration. Push to a model whose "
            "architecture was registered from this config (weightvault push --create --architecture NEW).",
            {
                "config_differences": differences,
                "missing_keys": [],
                "unexpected_keys": [],
                "shape_mismatches": [],
            },
        )


def library_key_names(
    folder_format: FolderFormat, weights: Mapping[str, torch.Tensor], expected: Collection[str]
) -> dict[str, torch.Tensor]:
    """Rename keys the library's way when that makes more of them name the architecture's weights."""
    wanted = set(expected)
    fitting = len(wanted.intersection(weights))
    if fitting == len(weights):
        return dict(weights)
    mapping = folder_format.module_keys(list(weights))
    renamed = {mapping.get(key, key): tensor for key, tensor in weights.items()}
    if len(renamed) == len(weights) and len(wanted.intersection(renamed)) > fitting:
        return renamed
    return dict(weights)


def describe_files(folder: PretrainedFolder | None) -> list[dict[str, Any]]:
    """``source.files`` of a folder upload: every file sent, with its size and sha256."""
    if folder is None:
        return []
    files: list[FolderFile] = [*folder.weights, *folder.extras]
    if folder.index is not None:
        files.append(folder.index)
    if folder.config_file is not None:
        files.append(folder.config_file)
    return sorted(
        (
            {"filename": file.name, "size": file.path.stat().st_size, "sha256": sha256_file(file.path)}
            for file in files
        ),
        key=lambda entry: entry["filename"],
    )


def write_folder_artifact(
    folder_format: FolderFormat,
    *,
    architecture: Architecture,
    config: Mapping[str, Any],
    weights: Mapping[str, torch.Tensor],
    extras: Sequence[FolderFile],
    workdir: Path,
    shard_bytes: int,
    inputs: tuple[torch.Tensor, ...],
    reference: ForwardRun,
) -> FolderArtifact:
    """Save the weights as the library's folder with the kept extras, zip it, and prove the zip.

    The proof unzips the artifact and loads it with the library's own loader (``from_pretrained``), as
    a user will, then requires outputs identical to the upload's.
    """
    folder = workdir / "folder"
    folder.mkdir()
    folder_format.save(load_fresh(architecture, config, weights), folder, shard_bytes=shard_bytes)
    for extra in extras:  # the user's own files (tokenizer, generation settings) win over defaults
        target = folder / extra.name
        target.unlink(missing_ok=True)
        target.hardlink_to(extra.path)
    path = workdir / "folder.zip"
    with zipfile.ZipFile(path, "x", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for member in sorted(folder.iterdir()):
            info = zipfile.ZipInfo(member.name, date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            with member.open("rb") as source, archive.open(info, "w", force_zip64=True) as sink:
                while chunk := source.read(1 << 20):
                    sink.write(chunk)
    sha256 = sha256_file(path)

    check = workdir / "folder-check"
    check.mkdir()
    with zipfile.ZipFile(path) as archive:
        archive.extractall(check)
    names = [spec.name for spec in architecture.inputs(config)]
    run = run_forward(folder_format.load(check, names), inputs)
    if not identical_outputs(reference.outputs, run.outputs):
        raise FolderProofFailed(
            "the model folder loaded back gave different outputs "
            f"(max abs diff {max_abs_diff(reference.outputs, run.outputs)})"
        )
    return FolderArtifact(
        path=path,
        sha256=sha256,
        validation={
            "status": "passed",
            "checked_at": datetime.now(UTC).isoformat(),
            "method": f"unzipped and loaded with the library's own loader into {architecture.name}; "
            "outputs on the example inputs identical to the upload's",
            "strict": True,
            "max_abs_diff": 0.0,
        },
    )
