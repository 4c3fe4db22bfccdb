"""Resolve version refs, ingest uploads into new versions, list, edit and delete them."""

from __future__ import annotations

import logging
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
from app.artifacts.naming import DownloadUrl
from app.checkpoints.ingest import ingest_checkpoint
from app.checkpoints.limits import ReadLimits
from app.db.engine import begin_write
from app.errors import AliasInUse, ModelNotFound, VersionNotFound
from app.models.models import Alias, RegisteredModel
from app.storage.blobstore import BlobStore, StoredBlob
from app.versions.models import Version
from app.versions.schemas import VersionRead, VersionUpdate

log = logging.getLogger("weightvault.versions")


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


def update_version(
    *, session: Session, version: Version, data: VersionUpdate, max_metadata_bytes: int
) -> Version:
    """Apply the fields ``data`` sets: ``description`` (null clears it) and ``metadata`` (replaced whole)."""
    changes = data.changes(max_metadata_bytes=max_metadata_bytes)
    if not changes:
        return version
    begin_write(session)
    row = session.get(Version, version.id)
    if row is None:
        session.rollback()
        raise VersionNotFound(f"Version {version.number} was deleted meanwhile.", {"version": version.number})
    for attribute, value in changes.items():
        setattr(row, attribute, value)
    session.commit()
    return row


def delete_version(*, session: Session, store: BlobStore, version: Version, force: bool = False) -> list[str]:
    """Delete the version and release its files; returns the names of the aliases removed with it.

    Raises ``AliasInUse`` when an alias points at it, unless ``force`` (then those aliases go too).
    """
    hashes = [artifact.sha256 for artifact in version.artifacts]
    begin_write(session)
    # Locked first (PostgreSQL), so an alias set concurrently is either seen here or waits for the delete.
    row = session.get(Version, version.id, with_for_update=True)
    if row is None:
        session.rollback()
        return []
    number = row.number
    aliases = list(session.scalars(select(Alias.name).where(Alias.version_id == row.id).order_by(Alias.name)))
    if aliases and not force:
        session.rollback()
        raise AliasInUse(
            f"Version {number} is what {_alias_list(aliases)} point{'s' if len(aliases) == 1 else ''} at; "
            "move or delete the alias first, or delete with ?force=true to remove the aliases with it.",
            {"aliases": aliases, "version": number},
        )
    session.delete(row)  # the aliases go by ON DELETE CASCADE
    session.commit()
    if aliases:
        log.info(
            "deleted version %d of model id %d with the aliases pointing at it: %s",
            number,
            row.model_id,
            ", ".join(aliases),
        )
    artifacts_service.release_blobs(session=session, store=store, hashes=hashes)
    return aliases


def _alias_list(aliases: Sequence[str]) -> str:
    quoted = [f"'{name}'" for name in aliases]
    return f"alias {quoted[0]}" if len(quoted) == 1 else f"aliases {', '.join(quoted)}"


def to_read(version: Version, *, model: RegisteredModel, url: DownloadUrl) -> VersionRead:
    return VersionRead.model_validate(
        {
            "model": model.name,
            "version": version.number,
            "created_at": version.created_at,
            "description": version.description,
            "metadata": version.user_metadata,
            "source": version.source,
            "training": version.training,
            "validation": version.validation,
            "artifacts": [
                artifacts_service.to_read(a, model=model.name, version=version.number, url=url)
                for a in version.artifacts
            ],
        }
    )
