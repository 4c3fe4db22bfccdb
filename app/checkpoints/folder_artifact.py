"""A version as a model folder (the ``hf`` artifact): written by the library, loaded back, composed as a zip."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from app.architectures.folders import FolderFormat
from app.architectures.spec import Architecture
from app.checkpoints.compose import TensorSink
from app.checkpoints.compose_folder import ComposedZipMismatch, check_composed_zip, compose_folder_zip
from app.checkpoints.folder import FolderFile, PretrainedFolder
from app.checkpoints.validate import ForwardRun, identical_outputs, load_fresh, max_abs_diff, run_forward
from app.errors import ArchitectureMismatch
from app.storage.blobstore import sha256_file
from app.storage.composed import Recipe

DEFAULT_HF_SHARD_BYTES = 5 * 1000**3  # what save_pretrained uses ("5GB")


class FolderProofFailed(RuntimeError):
    """The folder we wrote did not load back to the upload's outputs: a server fault, never served."""


@dataclass(frozen=True)
class FolderArtifact:
    """The proven zip's recipe, written to ``recipe_path`` (stored as the blob ``recipe_sha256``)."""

    recipe: Recipe
    recipe_path: Path
    recipe_sha256: str
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
    blobs: TensorSink,
    shard_bytes: int,
    inputs: tuple[torch.Tensor, ...],
    reference: ForwardRun,
) -> FolderArtifact:
    """Save the weights as the library's folder with the kept extras and compose its zip from blobs.

    The proof loads the folder with the library's own loader (``from_pretrained``), as a user will
    load the unzipped download, and requires outputs identical to the upload's; then the composed zip
    must read back, member by member, as exactly that folder. The folder is written once (by the
    library, in the workdir); the zip is never written out.
    """
    folder = workdir / "folder"
    folder.mkdir()
    folder_format.save(load_fresh(architecture, config, weights), folder, shard_bytes=shard_bytes)
    for extra in extras:  # the user's own files (tokenizer, generation settings) win over defaults
        target = folder / extra.name
        target.unlink(missing_ok=True)
        target.hardlink_to(extra.path)
    recipe = compose_folder_zip(folder, blobs=blobs)

    names = [spec.name for spec in architecture.inputs(config)]
    run = run_forward(folder_format.load(folder, names), inputs)
    if not identical_outputs(reference.outputs, run.outputs):
        raise FolderProofFailed(
            "the model folder loaded back gave different outputs "
            f"(max abs diff {max_abs_diff(reference.outputs, run.outputs)})"
        )
    try:
        check_composed_zip(recipe, blobs, folder)
    except ComposedZipMismatch as exc:
        raise FolderProofFailed(str(exc)) from exc
    encoded = recipe.to_json()
    recipe_path = workdir / "hf.zip.recipe.json"
    recipe_path.write_bytes(encoded)  # fsynced by BlobStore.put before it is visible
    return FolderArtifact(
        recipe=recipe,
        recipe_path=recipe_path,
        recipe_sha256=hashlib.sha256(encoded).hexdigest(),
        validation={
            "status": "passed",
            "checked_at": datetime.now(UTC).isoformat(),
            "method": f"loaded with the library's own loader into {architecture.name}, outputs on the "
            "example inputs identical to the upload's; the zip composed from the stored tensors read "
            "back member by member (names, order, local headers, CRC32s) as exactly that folder",
            "strict": True,
            "max_abs_diff": 0.0,
        },
    )
