"""Look up artifacts and release the files nobody references any more."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.artifacts import stored
from app.artifacts.models import Artifact
from app.artifacts.naming import PACKAGINGS, DownloadUrl, Packaging, download_filename, resolve_format
from app.artifacts.schemas import ArtifactRead, ArtifactSnapshot
from app.errors import ArtifactNotFound
from app.storage.blobstore import BlobStore
from app.storage.crc32 import crc32_hex
from app.versions.models import Version

log = logging.getLogger("weightvault.artifacts")

# A blob touched this recently may belong to an upload that has not committed its row yet.
RELEASE_GRACE_SECONDS = 600.0


def find_artifact(*, version: Version, kind: str, fmt: str | None) -> Artifact:
    wanted = resolve_format(kind, fmt)
    for artifact in version.artifacts:
        if artifact.kind == kind and artifact.format == wanted:
            return artifact
    hint = " Request a conversion with POST .../onnx first." if kind == "onnx" else ""
    raise ArtifactNotFound(f"Version {version.number} has no {kind} artifact in format {wanted}.{hint}")


def artifact_hashes_of_model(*, session: Session, model_id: int) -> list[str]:
    """Every blob the model's artifacts use (files, recipes and the tensor blobs recipes read)."""
    artifacts = session.scalars(select(Artifact).join(Version).where(Version.model_id == model_id))
    return sorted(stored.blob_names(session=session, artifacts=artifacts))


def referenced(*, session: Session, sha256: str) -> bool:
    return stored.is_referenced(session=session, sha256=sha256)


def release_blobs(
    *, session: Session, store: BlobStore, hashes: Iterable[str], grace_seconds: float = RELEASE_GRACE_SECONDS
) -> list[str]:
    """Remove blobs that no artifact row uses (as a file, a recipe or a recipe's tensor) and that no
    upload touched recently."""
    removed = []
    now = time.time()
    for sha256 in hashes:
        if referenced(session=session, sha256=sha256):
            continue
        path = store.path_for(sha256)
        try:
            if now - path.stat().st_mtime < grace_seconds:
                continue
        except FileNotFoundError:
            continue
        store.remove(sha256)
        removed.append(sha256)
    session.rollback()
    if removed:
        log.info("released %d unreferenced blobs", len(removed))
    return removed


def snapshot(artifact: Artifact) -> dict[str, Any]:
    return ArtifactSnapshot(
        kind=artifact.kind,
        format=artifact.format,
        size=artifact.size,
        sha256=artifact.sha256,
        crc32=crc32_of(artifact),
        created_at=artifact.created_at,
        validation=artifact.validation,
        packaging=packaging_of(artifact),
    ).model_dump(mode="json")


def crc32_of(artifact: Artifact) -> str | None:
    """The download's CRC-32 as clients read it (8 hex digits), or None for rows from before it."""
    return None if artifact.crc32 is None else crc32_hex(artifact.crc32)


def packaging_of(artifact: Artifact) -> Packaging:
    if artifact.packaging not in PACKAGINGS:
        raise ValueError(f"artifact {artifact.id} has an unknown packaging {artifact.packaging!r}")
    return artifact.packaging


def snapshot_read(recorded: dict[str, Any], *, model: str, version: int, url: DownloadUrl) -> ArtifactRead:
    """An artifact as a job recorded it."""
    shot = ArtifactSnapshot.model_validate(recorded)
    return ArtifactRead(
        **shot.model_dump(exclude={"packaging"}),
        filename=download_filename(model, version, shot.kind, shot.format, shot.packaging),
        url=url(model=model, version=version, kind=shot.kind, fmt=shot.format),
    )


def to_read(artifact: Artifact, *, model: str, version: int, url: DownloadUrl) -> ArtifactRead:
    return ArtifactRead(
        kind=artifact.kind,
        format=artifact.format,
        size=artifact.size,
        sha256=artifact.sha256,
        crc32=crc32_of(artifact),
        created_at=artifact.created_at,
        validation=artifact.validation,
        filename=download_filename(model, version, artifact.kind, artifact.format, packaging_of(artifact)),
        url=url(model=model, version=version, kind=artifact.kind, fmt=artifact.format),
    )
