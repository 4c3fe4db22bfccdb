"""From an uploaded file to proven artifacts: read, normalise, validate, write, reload and compare."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from app.architectures.folders import folder_format
from app.architectures.spec import Architecture
from app.checkpoints.folder_artifact import (
    DEFAULT_HF_SHARD_BYTES,
    check_config,
    describe_files,
    library_key_names,
    write_folder_artifact,
)
from app.checkpoints.formats import CheckpointFormat
from app.checkpoints.layout import Layout, normalise, prefixes_tried
from app.checkpoints.limits import ReadLimits
from app.checkpoints.reader import read_safetensors
from app.checkpoints.uploaded import read_upload
from app.checkpoints.validate import (
    Blueprint,
    blueprint,
    check_fits,
    check_proportionate,
    complete_tied,
    load_fresh,
    run_forward,
)
from app.checkpoints.writer import (
    canonical_weights,
    own_storages,
)
from app.errors import ArchitectureMismatch, UnreadableCheckpoint
from app.storage.tensorblobs import TensorBlobs


class ProofFailed(RuntimeError):
    """An artifact we wrote did not reproduce the upload's outputs: a server fault, never served."""


@dataclass(frozen=True)
class WrittenArtifact:
    """A proven artifact in the workdir: the whole file at ``path`` (``storage="file"``), or the recipe
    composing it at ``path`` (``storage="recipe"``, stored as the blob ``recipe_sha256``) reading the
    tensor blobs ``tensors``, staged under ``tensor_dir`` unless the store already held them."""

    kind: str
    format: str
    path: Path
    sha256: str
    size: int
    validation: dict[str, Any]
    # The download's CRC-32 (``X-Weightvault-Crc32``): what clients check instead of re-hashing sha256.
    crc32: int | None = None
    storage: str = "file"
    recipe_sha256: str | None = None
    tensors: tuple[str, ...] = ()
    tensor_dir: Path | None = None


@dataclass(frozen=True)
class IngestResult:
    # The files of a folder upload, ``[{filename, size, sha256}]``; empty for a single file.
    files: list[dict[str, Any]]
    format: CheckpointFormat
    layout: Layout
    training: dict[str, Any]
    validation: dict[str, Any]
    artifacts: list[WrittenArtifact]


def ingest_checkpoint(
    *,
    upload: Path,
    architecture: Architecture,
    config: Mapping[str, Any],
    workdir: Path,
    limits: ReadLimits,
    on_stage: Callable[[str], None] | None = None,
    hf_shard_bytes: int = DEFAULT_HF_SHARD_BYTES,
) -> IngestResult:
    """Validate ``upload`` against the architecture and write its proven artifacts into ``workdir``.

    ``on_stage`` is called with ``"read"`` once the upload was read and ``"written"`` once the artifacts
    are on disk (before the proofs); the process boundary's tests inject faults there.
    """
    stage = on_stage or _no_stage
    plan = blueprint(architecture, config)
    read = read_upload(upload, workdir=workdir, limits=limits, module_classes=architecture.module_classes)
    loaded = read.loaded
    folder_kind = folder_format(architecture)
    if read.folder is not None and read.folder.config is not None and folder_kind is not None:
        check_config(folder_kind, read.folder.config)
    stage("read")
    normal = normalise(loaded.content, plan.keys)
    if folder_kind is not None:
        normal.state_dict = library_key_names(folder_kind, normal.state_dict, plan.keys)
    weights = complete_tied(normal.state_dict, plan)
    try:
        check_fits(weights, plan)
    except ArchitectureMismatch as exc:
        exc.details["prefixes_tried"] = prefixes_tried(normal.original_keys, plan.keys)
        raise
    check_proportionate(weights, read.weights_bytes)
    inputs = architecture.example_inputs(config)
    reference = run_forward(load_fresh(architecture, config, weights), inputs)
    canonical = own_storages(canonical_weights(weights, plan))
    training_state = own_storages(normal.training_state)

    fmt, layout, training = loaded.format, normal.layout, normal.training
    # store_artifacts imports this module: import when used.
    from app.checkpoints.store_artifacts import TENSOR_DIR, store_artifacts, store_of

    artifacts = store_artifacts(
        workdir=workdir,
        weights=canonical,
        training_state=training_state,
        architecture=architecture,
        config=config,
        plan=plan,
        limits=limits,
        inputs=inputs,
        reference=reference,
        stage=stage,
    )
    if folder_kind is not None:
        hf = write_folder_artifact(
            folder_kind,
            architecture=architecture,
            config=config,
            weights=canonical,
            extras=read.folder.extras if read.folder is not None else (),
            workdir=workdir,
            # The same staging folder as the other downloads' blobs: a tensor they stored is not written again.
            blobs=TensorBlobs(workdir / TENSOR_DIR, store=store_of(workdir)),
            shard_bytes=hf_shard_bytes,
            inputs=inputs,
            reference=reference,
        )
        artifacts.append(
            WrittenArtifact(
                kind=folder_kind.artifact_kind,
                format="zip",
                path=hf.recipe_path,
                sha256=hf.recipe.sha256,
                size=hf.recipe.size,
                crc32=hf.recipe.crc32,
                validation=hf.validation,
                storage="recipe",
                recipe_sha256=hf.recipe_sha256,
                tensors=tuple(sorted(hf.recipe.blob_shas())),
                tensor_dir=workdir / TENSOR_DIR,
            )
        )
    return IngestResult(
        files=describe_files(read.folder),
        format=fmt,
        layout=layout,
        training=training,
        validation={
            "status": "passed",
            "strict": True,
            "architecture": architecture.name,
            "checked_at": _now(),
            "forward": reference.report,
        },
        artifacts=artifacts,
    )


def load_artifact_weights(
    *, kind: str, fmt: str, path: Path, plan: Blueprint, limits: ReadLimits
) -> dict[str, torch.Tensor]:
    """Read a stored artifact back the way a user would, memory-mapped."""
    if fmt == "safetensors":
        tensors, _metadata = read_safetensors(path, limits=limits)
        return complete_tied(tensors, plan)
    try:
        content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        raise unreadable_training_entries(kind, exc) from None
    weights = content["model_state_dict"] if kind == "full" else content
    return dict(weights)


def unreadable_training_entries(kind: str, exc: pickle.UnpicklingError) -> Exception:
    """What torch's weights_only loader refusing an artifact means.

    The full checkpoint carries the upload's own training entries: one that the reader accepted but the
    weights_only loader cannot read back is the file's limit (422), not a server fault. Anything else is.
    """
    if kind != "full":
        return exc
    return UnreadableCheckpoint(
        "The checkpoint's training entries hold a value torch.load(weights_only=True) cannot read back "
        f"({str(exc).strip().splitlines()[-1][:200]}); keep tensors, numbers, strings, lists and dicts."
    )


def _no_stage(_stage: str) -> None:
    pass


def _now() -> str:
    return datetime.now(UTC).isoformat()
