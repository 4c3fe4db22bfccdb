"""Store an upload's three downloads as recipes over tensor blobs, each proven without being written out.

``full.pt``, ``weights.safetensors`` and ``weights.pt`` used to be three whole files: each weight on
disk three times. Here every distinct storage is written once, as a tensor blob staged in the workdir
(or, when the store already holds the same bytes, not written at all but claimed), and each format is a
recipe: the literal bytes the format puts around those blobs (``app.checkpoints.compose``). The
proofs are as strict as for whole files: each composed file is read the way a client's library reads
it (the zip member table checked as ``check_torch_zip`` checks uploads, the pickle by torch's
weights-only unpickler, the safetensors header by the safetensors library), its tensors mapped from
the blobs, loaded into a fresh instance and run on the example inputs; the outputs must equal the
upload's exactly. Nothing is written but the blobs and three small recipe files.

Runs in the ingest child (no database): the parent moves the staged blobs into the store and commits
the rows (``versions.service.create_version``).
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from app.architectures.spec import Architecture
from app.checkpoints.compose import StorageBlobs, safetensors_pieces, torch_pieces
from app.checkpoints.compose_load import load_composed_safetensors, load_composed_torch
from app.checkpoints.ingest import ProofFailed, WrittenArtifact, unreadable_training_entries
from app.checkpoints.limits import ReadLimits
from app.checkpoints.validate import (
    Blueprint,
    ForwardRun,
    check_fits,
    complete_tied,
    identical_outputs,
    load_fresh,
    max_abs_diff,
    run_forward,
)
from app.checkpoints.zipcheck import check_torch_zip_file
from app.errors import UnreadableCheckpoint
from app.storage.blobstore import BlobStore
from app.storage.composed import Recipe, RecipeError, open_composed
from app.storage.recipe_hash import build_recipes
from app.storage.tensorblobs import TensorBlobs

TENSOR_DIR = "tensors"


def store_artifacts(
    *,
    workdir: Path,
    weights: dict[str, torch.Tensor],
    training_state: Mapping[str, Any],
    architecture: Architecture,
    config: Mapping[str, Any],
    plan: Blueprint,
    limits: ReadLimits,
    inputs: tuple[torch.Tensor, ...],
    reference: ForwardRun,
    stage: Callable[[str], None],
) -> list[WrittenArtifact]:
    """The three downloads of ``weights`` (on storages of their own bytes: ``writer.own_storages``) as
    proven recipes in ``workdir``, their tensor blobs staged under ``workdir/tensors``."""
    blobs = TensorBlobs(workdir / TENSOR_DIR, store=store_of(workdir))
    storages = StorageBlobs(blobs)
    try:
        drafts = {
            ("full", "pt"): torch_pieces({"model_state_dict": weights, **training_state}, blobs=storages),
            ("weights", "safetensors"): safetensors_pieces(
                weights, blobs=storages, tied_groups=plan.tied_groups
            ),
            # Always composed by us from torch.save's own records, never the upload's bytes: a served
            # file holds only what torch.save writes (no smuggled members, no device names a CPU-only
            # client cannot load).
            ("weights", "pt"): torch_pieces(weights, blobs=storages),
        }
        blobs.finish()
    except BaseException:
        blobs.abandon()
        raise
    recipes = build_recipes(drafts, blobs)
    stage("written")
    artifacts = []
    for (kind, fmt), recipe in recipes.items():
        validation = prove_composed(
            kind=kind,
            fmt=fmt,
            recipe=recipe,
            blobs=blobs,
            scratch=workdir,
            architecture=architecture,
            config=config,
            plan=plan,
            limits=limits,
            inputs=inputs,
            reference=reference,
        )
        encoded = recipe.to_json()
        recipe_path = workdir / f"{kind}.{fmt}.recipe.json"
        recipe_path.write_bytes(encoded)  # fsynced by BlobStore.put before it is visible
        artifacts.append(
            WrittenArtifact(
                kind=kind,
                format=fmt,
                path=recipe_path,
                sha256=recipe.sha256,
                size=recipe.size,
                crc32=recipe.crc32,
                validation=validation,
                storage="recipe",
                recipe_sha256=hashlib.sha256(encoded).hexdigest(),
                tensors=tuple(sorted(recipe.blob_shas())),
                tensor_dir=blobs.root,
            )
        )
    return artifacts


def store_of(workdir: Path) -> BlobStore | None:
    """The store whose staging area holds ``workdir`` (``root/tmp/<process>/<stage>``), if any: blobs it
    already holds are claimed instead of written again. The child has no settings, only the path."""
    for parent in workdir.resolve().parents:
        if parent.name == "tmp" and (parent.parent / "blobs" / "sha256").is_dir():
            return BlobStore(parent.parent)
    return None


def load_composed_weights(
    *,
    kind: str,
    fmt: str,
    recipe: Recipe,
    blobs: TensorBlobs,
    scratch: Path,
    plan: Blueprint,
    limits: ReadLimits,
) -> dict[str, torch.Tensor]:
    """Read a composed download the way a user's library would, tensors mapped from the blobs."""
    if fmt == "safetensors":
        tensors, _metadata = load_composed_safetensors(recipe, blobs, scratch=scratch)
        return complete_tied(tensors, plan)
    try:
        with open_composed(recipe, blobs) as handle:
            check_torch_zip_file(handle, recipe.size, limits)
    except UnreadableCheckpoint as exc:  # the archive is ours: a server fault, never the upload's
        raise ProofFailed(
            f"{kind}/{fmt} composed from the tensor blobs is not torch.save's zip: {exc}"
        ) from exc
    try:
        content = load_composed_torch(recipe, blobs)
    except pickle.UnpicklingError as exc:
        raise unreadable_training_entries(kind, exc) from None
    weights = content["model_state_dict"] if kind == "full" else content
    return dict(weights)


def prove_composed(
    *,
    kind: str,
    fmt: str,
    recipe: Recipe,
    blobs: TensorBlobs,
    scratch: Path,
    architecture: Architecture,
    config: Mapping[str, Any],
    plan: Blueprint,
    limits: ReadLimits,
    inputs: tuple[torch.Tensor, ...],
    reference: ForwardRun,
) -> dict[str, Any]:
    """Load the composed file into a fresh instance and require outputs identical to the upload's."""
    try:
        weights = load_composed_weights(
            kind=kind, fmt=fmt, recipe=recipe, blobs=blobs, scratch=scratch, plan=plan, limits=limits
        )
    except RecipeError as exc:
        raise ProofFailed(f"{kind}/{fmt} composed from the tensor blobs does not read back: {exc}") from exc
    check_fits(weights, plan)
    run = run_forward(load_fresh(architecture, config, weights), inputs)
    if not identical_outputs(reference.outputs, run.outputs):
        raise ProofFailed(
            f"{kind}/{fmt} composed from the tensor blobs gave different outputs "
            f"(max abs diff {max_abs_diff(reference.outputs, run.outputs)})"
        )
    return {
        "status": "passed",
        "checked_at": _now(),
        "method": f"composed from the stored tensors and read back (zip members, pickle or header checked) "
        f"into a fresh {architecture.name} (strict=True); outputs on the example inputs identical to the "
        "upload's",
        "strict": True,
        "max_abs_diff": 0.0,
    }


def _now() -> str:
    return datetime.now(UTC).isoformat()
