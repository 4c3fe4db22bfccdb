"""Resolve version refs, ingest uploads into new versions, list and delete them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.api.names import is_valid_name, is_version_number
from app.architectures.registry import ArchitectureRegistry
from app.artifacts import service as artifacts_service
from app.artifacts.models import Artifact
from app.checkpoints.ingest import ingest_checkpoint
from app.checkpoints.limits import ReadLimits
from app.db.engine import begin_write
from app.errors import ModelNotFound, VersionNotFound
from app.models.models import Alias, RegisteredModel
from app.storage.blobstore import BlobStore, StoredBlob
from app.versions.models import Version
from app.versions.schemas import VersionRead


@dataclass(frozen=True)
class ReceivedUpload:
    """An upload's bytes, already on disk in a staging directory, hashed while they arrived."""

    path: Path
    size: int
    sha256: str
    filename: str | None


def resolve_version(*, session: Session, model: RegisteredModel, ref: str) -> Version:
    """A version by number, alias or ``latest``; raises ``VersionNotFound``."""
    query = select(Version).where(Version.model_id == model.id)
    if is_version_number(ref):
        version = session.scalar(query.where(Version.number == int(ref)))
    elif ref == "latest":
        version = session.scalar(query.order_by(Version.number.desc()).limit(1))
    elif is_valid_name(ref):
        version = session.scalar(
            query.join(Alias, Alias.version_id == Version.id).where(
                Alias.model_id == model.id, Alias.name == ref
            )
        )
    else:
        version = None
    if version is None:
        raise VersionNotFound(
            f"Model '{model.name}' has no version '{ref[:200]}'; refs are a version number, an alias or 'latest'.",
            {"model": model.name, "ref": ref[:200]},
        )
    return version


def list_versions(
    *, session: Session, model: RegisteredModel, limit: int, after: Any | None
) -> Sequence[Version]:
    query = select(Version).where(Version.model_id == model.id).order_by(Version.number).limit(limit + 1)
    if isinstance(after, int):
        query = query.where(Version.number > after)
    return session.scalars(query).all()


def create_version(
    *,
    session: Session,
    store: BlobStore,
    registry: ArchitectureRegistry,
    limits: ReadLimits,
    model: RegisteredModel,
    upload: ReceivedUpload,
    metadata: Mapping[str, Any],
    workdir: Path,
) -> Version:
    """Validate the upload, store its proven artifacts, then commit the version row (only then)."""
    architecture = registry.get(model.architecture)
    session.rollback()  # hold no read transaction (or SQLite snapshot) during the long ingest
    result = ingest_checkpoint(
        upload=upload.path,
        upload_sha256=upload.sha256,
        architecture=architecture,
        config=model.config,
        workdir=workdir,
        limits=limits,
    )
    stored: list[StoredBlob] = []
    try:
        stored = [store.put(artifact.path, artifact.sha256) for artifact in result.artifacts]
        begin_write(session)
        number = _allocate_number(session=session, model=model)
        version = Version(
            model_id=model.id,
            number=number,
            user_metadata=dict(metadata),
            source={
                "filename": upload.filename,
                "size": upload.size,
                "sha256": upload.sha256,
                "format": result.format,
                "layout": result.layout,
            },
            training=result.training,
            validation=result.validation,
            artifacts=[
                Artifact(
                    kind=artifact.kind,
                    format=artifact.format,
                    size=artifact.size,
                    sha256=artifact.sha256,
                    validation=artifact.validation,
                )
                for artifact in result.artifacts
            ],
        )
        session.add(version)
        session.commit()
    except BaseException:
        session.rollback()
        for blob in stored:
            store.discard(blob)
        raise
    return version


def _allocate_number(*, session: Session, model: RegisteredModel) -> int:
    # The row lock (PostgreSQL) or the write lock (SQLite BEGIN IMMEDIATE) serialises concurrent uploads.
    number = session.scalar(
        update(RegisteredModel)
        .where(RegisteredModel.id == model.id)
        .values(last_version=RegisteredModel.last_version + 1)
        .returning(RegisteredModel.last_version),
        execution_options={"synchronize_session": False},
    )
    if number is None:
        raise ModelNotFound(f"Model '{model.name}' was deleted while the upload was being checked.")
    return int(number)


def delete_version(*, session: Session, store: BlobStore, version: Version) -> None:
    hashes = [artifact.sha256 for artifact in version.artifacts]
    begin_write(session)
    session.delete(session.get(Version, version.id))
    session.commit()
    artifacts_service.release_blobs(session=session, store=store, hashes=hashes)


def to_read(version: Version, *, model: RegisteredModel) -> VersionRead:
    return VersionRead.model_validate(
        {
            "model": model.name,
            "version": version.number,
            "created_at": version.created_at,
            "metadata": version.user_metadata,
            "source": version.source,
            "training": version.training,
            "validation": version.validation,
            "artifacts": [
                artifacts_service.to_read(a, model=model.name, version=version.number)
                for a in version.artifacts
            ],
        }
    )
