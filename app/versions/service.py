"""Resolve version refs, ingest uploads into new versions, list, edit and delete them."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Row,
    Select,
    and_,
    bindparam,
    false,
    func,
    select,
    update,
)
from sqlalchemy.orm import Session

from app.api.names import is_valid_name, is_version_number
from app.architectures.registry import ArchitectureRegistry
from app.artifacts import service as artifacts_service
from app.artifacts import stored as stored_artifacts
from app.artifacts.models import Artifact, ArtifactTensor
from app.artifacts.naming import PACKAGINGS, DownloadUrl, download_filename
from app.checkpoints.ingest import WrittenArtifact
from app.checkpoints.limits import ReadLimits
from app.checkpoints.pool import Ingester
from app.db.engine import begin_write
from app.db.raw_reads import ReadConnection
from app.errors import AliasInUse, ModelNotFound, VersionNotFound
from app.models.models import Alias, RegisteredModel
from app.models.service import model_not_found
from app.storage.blobstore import BlobStore, StoredBlob
from app.storage.crc32 import crc32_hex
from app.storage.tensorblobs import TensorBlobs
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
        raise _version_not_found(model.name, ref)
    return version


# Core statements over the tables, built once with bind parameters (see app/models/service.py).
_models = RegisteredModel.__table__.c
_versions = Version.__table__.c
_artifacts = Artifact.__table__.c
_aliases = Alias.__table__.c
_VERSION_COLUMNS = (
    _versions.id,
    _versions.number,
    _versions.created_at,
    _versions.description,
    _versions.metadata,
    _versions.source,
    _versions.training,
    _versions.validation,
)
# Labelled: versions and artifacts share column names.
_ARTIFACT_COLUMNS = (
    _artifacts.kind.label("a_kind"),
    _artifacts.format.label("a_format"),
    _artifacts.size.label("a_size"),
    _artifacts.sha256.label("a_sha256"),
    _artifacts.crc32.label("a_crc32"),
    _artifacts.created_at.label("a_created_at"),
    _artifacts.validation.label("a_validation"),
    _artifacts.packaging.label("a_packaging"),
)
_MODEL_ID = select(_models.id).where(_models.name == bindparam("model"))
_MODEL_STAMP = select(_models.id, _models.created_at, _models.revision).where(
    _models.name == bindparam("model")
)


def read_model_stamp(*, conn: ReadConnection, model: str) -> tuple[Any, ...] | None:
    """What changes whenever a read of ``model``'s versions would (``app.api.read_cache``): its id,
    created_at and revision; None when there is no such model."""
    if not is_valid_name(model):
        return None
    row = conn.execute(_MODEL_STAMP, {"model": model}).first()
    return None if row is None else tuple(row)


def _read_version_statement(condition: ColumnElement[bool]) -> Select[Any]:
    """The model (always a row when it exists), the version ``condition`` picks and its artifacts."""
    return (
        select(_models.id.label("model_id"), *_VERSION_COLUMNS, *_ARTIFACT_COLUMNS)
        .select_from(RegisteredModel.__table__)
        .outerjoin(Version.__table__, and_(_versions.model_id == _models.id, condition))
        .outerjoin(Artifact.__table__, _artifacts.version_id == _versions.id)
        .where(_models.name == bindparam("model"))
        .order_by(_artifacts.version_id, _artifacts.id)  # see _PAGE_ARTIFACTS
    )


_newer = Version.__table__.alias("newer")
_READ_VERSION = {
    "number": _read_version_statement(_versions.number == bindparam("number")),
    "latest": _read_version_statement(
        _versions.number
        == select(func.max(_newer.c.number)).where(_newer.c.model_id == _models.id).scalar_subquery()
    ),
    "alias": _read_version_statement(
        _versions.id
        == select(_aliases.version_id)
        .where(_aliases.model_id == _models.id, _aliases.name == bindparam("alias"))
        .scalar_subquery()
    ),
    "none": _read_version_statement(false()),
}


@lru_cache(maxsize=4)
def _version_page_statement(after: bool, newest_first: bool) -> Select[Any]:
    page = select(*_VERSION_COLUMNS).where(_versions.model_id == bindparam("model_id"))
    if after:
        after_param: BindParameter[int] = bindparam("after")
        page = page.where(_versions.number < after_param if newest_first else _versions.number > after_param)
    return page.order_by(_versions.number.desc() if newest_first else _versions.number).limit(
        bindparam("limit")
    )


# The page's artifacts by a second statement: joined, each version's JSON columns would be read (and
# parsed) once per artifact. Ordered by (version_id, id), which the version_id index yields as it is:
# ordered by id alone, SQLite may plan (and keep, in a connection's statement cache) a scan of the whole
# table in id order, harmless while the table is small and 10x slower at 300,000 artifacts.
_PAGE_ARTIFACTS = (
    select(_artifacts.version_id.label("id"), *_ARTIFACT_COLUMNS)
    .where(_artifacts.version_id.in_(bindparam("ids", expanding=True)))
    .order_by(_artifacts.version_id, _artifacts.id)
)


def _version_reads(
    rows: Sequence[Row[*tuple[Any, ...]]],
    *,
    model: str,
    url: DownloadUrl,
    artifacts: Sequence[Row[*tuple[Any, ...]]] | None = None,
) -> list[VersionRead]:
    """Rows of version columns, each joined with one of its artifacts (or none) or, with ``artifacts``,
    alone and the artifacts' rows (with the version id as ``id``) apart -> VersionReads, in order."""
    found: dict[int, dict[str, Any]] = {}
    for row in rows:
        if row.id not in found:
            found[row.id] = {
                "model": model,
                "version": row.number,
                "created_at": row.created_at,
                "description": row.description,
                "metadata": row.metadata,
                "source": row.source,
                "training": row.training,
                "validation": row.validation,
                "artifacts": [],
            }
    for row in rows if artifacts is None else artifacts:
        if row.a_kind is None:
            continue
        packaging = row.a_packaging
        if packaging not in PACKAGINGS:
            raise ValueError(f"an artifact of version {row.id} has an unknown packaging {packaging!r}")
        number = found[row.id]["version"]
        found[row.id]["artifacts"].append(
            {
                "kind": row.a_kind,
                "format": row.a_format,
                "size": row.a_size,
                "sha256": row.a_sha256,
                "crc32": None if row.a_crc32 is None else crc32_hex(row.a_crc32),
                "created_at": row.a_created_at,
                "validation": row.a_validation,
                "filename": download_filename(model, number, row.a_kind, row.a_format, packaging),
                "url": url(model=model, version=number, kind=row.a_kind, fmt=row.a_format),
            }
        )
    return [VersionRead.model_validate(version) for version in found.values()]


def read_version(*, conn: ReadConnection, model: str, ref: str, url: DownloadUrl) -> VersionRead:
    """``GET .../versions/{ref}`` in one statement: the model, the version ``ref`` names and its artifacts.

    Raises ``ModelNotFound`` or ``VersionNotFound`` as ``resolve_version`` does.
    """
    if not is_valid_name(model):
        raise model_not_found(model)
    params: dict[str, Any] = {"model": model}
    if is_version_number(ref):
        statement, params["number"] = _READ_VERSION["number"], int(ref)
    elif ref == "latest":
        statement = _READ_VERSION["latest"]
    elif is_valid_name(ref):
        statement, params["alias"] = _READ_VERSION["alias"], ref
    else:
        statement = _READ_VERSION["none"]
    rows = conn.execute(statement, params).all()
    if not rows:
        raise model_not_found(model)
    if rows[0].id is None:
        raise _version_not_found(model, ref)
    return _version_reads(rows, model=model, url=url)[0]


def read_version_page(
    *, conn: ReadConnection, model: str, limit: int, after: Any | None, newest_first: bool, url: DownloadUrl
) -> list[VersionRead]:
    """Up to ``limit + 1`` versions after ``after`` in number order (``newest_first``: descending), with
    their artifacts: the model's id, the page by the (model_id, number) index, the page's artifacts."""
    model_id = conn.scalar(_MODEL_ID, {"model": model}) if is_valid_name(model) else None
    if model_id is None:
        raise model_not_found(model)
    has_after = isinstance(after, int)
    statement = _version_page_statement(has_after, newest_first)
    rows = conn.execute(statement, {"model_id": model_id, "after": after, "limit": limit + 1}).all()
    artifacts = conn.execute(_PAGE_ARTIFACTS, {"ids": [row.id for row in rows]}).all() if rows else []
    return _version_reads(rows, model=model, url=url, artifacts=artifacts)


def _version_not_found(model: str, ref: str) -> VersionNotFound:
    return VersionNotFound(
        f"Model '{model}' has no version '{ref[:200]}'; refs are a version number, an alias or 'latest'.",
        {"model": model, "ref": ref[:200]},
    )


def create_version(
    *,
    session: Session,
    store: BlobStore,
    registry: ArchitectureRegistry,
    limits: ReadLimits,
    ingester: Ingester,
    model: RegisteredModel,
    upload: ReceivedUpload,
    metadata: Mapping[str, Any],
    workdir: Path,
) -> Version:
    """Validate the upload, store its proven artifacts, then commit the version row (only then).

    The ingest runs in ``ingester``'s child process (``IngestCrashed`` / ``IngestTimeout`` when it dies
    or overruns); its files are in ``workdir``, which the caller removes.
    """
    architecture = registry.get(model.architecture)
    session.rollback()  # hold no read transaction (or SQLite snapshot) during the long ingest
    result = ingester.ingest(
        upload=upload.path,
        architecture=architecture,
        config=model.config,
        workdir=workdir,
        limits=limits,
    )
    stored: list[StoredBlob] = []
    try:
        stored = _store_blobs(store=store, artifacts=result.artifacts)
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
                **({"files": result.files} if result.files else {}),
            },
            training=result.training,
            validation=result.validation,
            artifacts=[
                Artifact(
                    kind=artifact.kind,
                    format=artifact.format,
                    size=artifact.size,
                    sha256=artifact.sha256,
                    crc32=artifact.crc32,
                    validation=artifact.validation,
                    storage=artifact.storage,
                    recipe_sha256=artifact.recipe_sha256,
                    tensors=[ArtifactTensor(sha256=sha256) for sha256 in sorted(set(artifact.tensors))],
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


def _store_blobs(*, store: BlobStore, artifacts: Sequence[WrittenArtifact]) -> list[StoredBlob]:
    """Move the ingest's staged blobs into the store, tensor blobs before the recipes that read them;
    claim again the tensor blobs the ingest found already stored. All durable before any row is
    committed; on failure, what this call created is discarded (register-or-rollback)."""
    stored: list[StoredBlob] = []
    try:
        tensors: dict[str, Path | None] = {}
        for artifact in artifacts:
            for sha256 in artifact.tensors:
                tensors.setdefault(sha256, artifact.tensor_dir)
        for sha256, tensor_dir in sorted(tensors.items(), key=lambda item: item[0]):
            staged = TensorBlobs(tensor_dir).staged_path(sha256) if tensor_dir is not None else None
            if staged is not None and staged.is_file():
                stored.append(store.put(staged, sha256))
            elif store.claim(sha256) is None:
                # Stored when the ingest looked, freed since (a release after the grace period).
                raise RuntimeError(f"tensor blob {sha256} was freed while the upload was ingested; retry")
        for artifact in artifacts:
            name = artifact.recipe_sha256 if artifact.storage == "recipe" else artifact.sha256
            if name is None:
                raise ValueError(f"the {artifact.kind}/{artifact.format} recipe has no sha256")
            stored.append(store.put(artifact.path, name))
    except BaseException:
        for blob in stored:
            store.discard(blob)
        raise
    return stored


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
    hashes = stored_artifacts.blob_names(session=session, artifacts=version.artifacts)
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
