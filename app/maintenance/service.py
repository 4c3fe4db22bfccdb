"""``fsck`` proves every row has its intact file or composition and lists blobs no row needs; ``gc`` removes
those (tensor blobs included: exactly those no remaining recipe reads)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.artifacts import stored
from app.artifacts.models import Artifact, ArtifactTensor
from app.models.models import RegisteredModel
from app.storage.blobstore import BlobStore, sha256_and_crc32_file
from app.storage.composed import Recipe, RecipeError
from app.storage.composed import verify as composition_problems
from app.versions.models import Version


@dataclass
class FsckReport:
    checked_blobs: int = 0
    checked_rows: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Blobs no artifact references (left by deletes until gc runs): information, not a problem.
    unreferenced_blobs: list[Path] = field(default_factory=list)
    unreferenced_bytes: int = 0

    @property
    def clean(self) -> bool:
        return not self.problems


def fsck(*, session: Session, store: BlobStore, rehash: bool = True) -> FsckReport:
    """Re-hash every blob (tensor blobs included), check every recipe-backed artifact's composition, and
    match artifact rows and blobs both ways."""
    report = FsckReport()
    rows = session.execute(
        select(
            Artifact.id,
            Artifact.sha256,
            Artifact.crc32,
            Artifact.size,
            Artifact.kind,
            Artifact.format,
            Artifact.storage,
            Artifact.recipe_sha256,
            Version.number,
            RegisteredModel.name,
        )
        .join(Version, Artifact.version_id == Version.id)
        .join(RegisteredModel, Version.model_id == RegisteredModel.id)
    ).all()
    tensor_rows: dict[int, set[str]] = {}
    for artifact_id, tensor in session.execute(select(ArtifactTensor.artifact_id, ArtifactTensor.sha256)):
        tensor_rows.setdefault(artifact_id, set()).add(tensor)
    referenced: dict[str, list[str]] = {}
    verified: dict[str, list[str]] = {}  # each distinct recipe composed (and hashed) once
    file_crcs: dict[str, list[tuple[int, str]]] = {}  # what clients are told each whole-file blob's CRC is
    for artifact_id, sha256, crc32, size, kind, fmt, storage, recipe_sha256, number, model in rows:
        report.checked_rows += 1
        where = f"{model} v{number} {kind}/{fmt}"
        if storage == stored.RECIPE and recipe_sha256 is not None:
            referenced.setdefault(recipe_sha256, []).append(where)
            for tensor in tensor_rows.get(artifact_id, set()):
                referenced.setdefault(tensor, []).append(where)
            report.problems.extend(
                _check_recipe(
                    store=store,
                    where=where,
                    recipe_sha256=recipe_sha256,
                    size=size,
                    sha256=sha256,
                    crc32=crc32,
                    tensors=tensor_rows.get(artifact_id, set()),
                    rehash=rehash,
                    verified=verified,
                )
            )
            continue
        if storage != stored.FILE:
            report.problems.append(f"unknown storage: {where} is stored as {storage!r}")
            continue
        referenced.setdefault(sha256, []).append(where)
        if crc32 is not None:
            file_crcs.setdefault(sha256, []).append((crc32, where))
        path = store.path_for(sha256)
        if not path.is_file():
            report.problems.append(f"missing file: {where} needs blob {sha256}, which is not on disk")
        elif path.stat().st_size != size:
            report.problems.append(
                f"size mismatch: {where} records {size} bytes, blob {sha256} has {path.stat().st_size}"
            )
    for name, path in store.iter_blobs():
        report.checked_blobs += 1
        try:
            size = path.stat().st_size
            # Unreferenced blobs are hashed too: an upload of the same content would claim the file as is.
            digest, crc = sha256_and_crc32_file(path) if rehash else (name, None)
        except FileNotFoundError:
            continue  # a concurrent gc removed it since the listing
        if digest != name:
            report.problems.append(f"corrupt blob: {path} does not hash to its name")
        elif crc is not None:
            for recorded, where in file_crcs.get(name, []):
                if recorded != crc:
                    report.problems.append(
                        f"crc32 mismatch: {where} records CRC-32 {recorded:08x}, blob {name} has {crc:08x}"
                    )
        if name not in referenced:
            report.unreferenced_blobs.append(path)
            report.unreferenced_bytes += size
    for leftover in store.leftovers():
        report.notes.append(f"staging leftover of a stopped process: {leftover} (removed at the next start)")
    return report


def _check_recipe(
    *,
    store: BlobStore,
    where: str,
    recipe_sha256: str,
    size: int,
    sha256: str,
    crc32: int | None,
    tensors: set[str],
    rehash: bool,
    verified: dict[str, list[str]],
) -> list[str]:
    """What is wrong with one recipe-backed artifact: its recipe missing or unreadable, the recipe's size
    or sha256 not the row's, tensor rows that do not match what the recipe reads (gc would free a blob
    still in use, or keep one forever), tensor blobs missing or short, composed bytes that hash wrong."""
    try:
        recipe = Recipe.from_json(store.path_for(recipe_sha256).read_bytes())
    except FileNotFoundError:
        return [f"missing recipe: {where} needs recipe blob {recipe_sha256}, which is not on disk"]
    except RecipeError as exc:
        return [f"unreadable recipe: {where}: recipe blob {recipe_sha256}: {exc}"]
    problems = []
    if recipe.size != size or recipe.sha256 != sha256:
        problems.append(
            f"recipe mismatch: {where} records {size} bytes sha256 {sha256}; its recipe composes "
            f"{recipe.size} bytes sha256 {recipe.sha256}"
        )
    # The recipe's own CRC is checked against the composed bytes below (``verify``).
    if crc32 is not None and recipe.crc32 != crc32:
        problems.append(
            f"crc32 mismatch: {where} records CRC-32 {crc32:08x}; its recipe composes "
            f"{'no CRC' if recipe.crc32 is None else f'{recipe.crc32:08x}'}"
        )
    if recipe.blob_shas() != tensors:
        missing, extra = sorted(recipe.blob_shas() - tensors), sorted(tensors - recipe.blob_shas())
        problems.append(
            f"tensor rows mismatch: {where}: recipe reads {len(missing)} tensor blob(s) without a row "
            f"{missing[:3]}, and {len(extra)} row(s) name blobs it does not read {extra[:3]}"
        )
    if recipe_sha256 not in verified:
        verified[recipe_sha256] = composition_problems(recipe, store, rehash=rehash)
    problems.extend(f"bad composition: {where}: {problem}" for problem in verified[recipe_sha256])
    return problems


@dataclass
class GcReport:
    removed: list[str] = field(default_factory=list)
    kept_recent: list[str] = field(default_factory=list)
    freed_bytes: int = 0


def gc(*, session: Session, store: BlobStore, grace_seconds: float, dry_run: bool = False) -> GcReport:
    """Remove blobs that no artifact uses (as its file, its recipe or a tensor its recipe reads) and that nobody touched within ``grace_seconds``
    (an upload in flight touches the blob it is about to reference)."""
    report = GcReport()
    referenced = stored.referenced_names(session=session)
    session.rollback()
    now = time.time()
    for name, path in store.iter_blobs():
        if name in referenced:
            continue
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        if now - stat.st_mtime < grace_seconds:
            report.kept_recent.append(name)
            continue
        # Re-check under no lock but just before removal: a row committed since the scan keeps its blob.
        if stored.is_referenced(session=session, sha256=name):
            continue
        if not dry_run:
            path.unlink(missing_ok=True)
        report.removed.append(name)
        report.freed_bytes += stat.st_size
    session.rollback()
    return report
