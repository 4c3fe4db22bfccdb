"""Create, read, search, edit and delete models; set and remove aliases."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.api.metadata import check_metadata
from app.api.names import check_alias, check_name, is_valid_name
from app.architectures.registry import ArchitectureRegistry
from app.db.engine import begin_write
from app.errors import ArchitectureNotFound, ArchitectureNotFoundInput, ModelExists, ModelNotFound
from app.models.models import Alias, RegisteredModel
from app.models.schemas import ModelCreate, ModelRead, ModelUpdate
from app.storage.blobstore import BlobStore
from app.versions.models import Version


def create_model(
    *, session: Session, registry: ArchitectureRegistry, data: ModelCreate, max_metadata_bytes: int
) -> RegisteredModel:
    name = check_name(data.name, "model name")
    metadata = (
        check_metadata(data.metadata, limit=max_metadata_bytes) if "metadata" in data.model_fields_set else {}
    )
    try:
        architecture = registry.get(data.architecture)
    except ArchitectureNotFound as exc:
        raise ArchitectureNotFoundInput(exc.message, exc.details) from None
    config = architecture.effective_config(data.config)
    begin_write(session)
    model = RegisteredModel(
        name=name,
        architecture=architecture.name,
        config=config,
        description=data.description,
        user_metadata=metadata,
    )
    session.add(model)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ModelExists(
            f"A model named '{name}' already exists; pick another name or push a new version to it."
        ) from None
    return model


def get_model(*, session: Session, name: str) -> RegisteredModel:
    model = (
        session.scalar(select(RegisteredModel).where(RegisteredModel.name == name))
        if is_valid_name(name)
        else None
    )
    if model is None:
        raise _model_not_found(name)
    return model


def _model_not_found(name: str) -> ModelNotFound:
    return ModelNotFound(
        f"No model named '{name[:200]}'; create it with POST /v1/models.", {"model": name[:200]}
    )


def list_models(
    *, session: Session, limit: int, after: Any | None, q: str = "", architecture: str = ""
) -> Sequence[RegisteredModel]:
    """Models in name order after ``after``: those whose name contains ``q`` (case-insensitive, ``%`` and
    ``_`` literal) and with ``architecture``, when given."""
    query = select(RegisteredModel).order_by(RegisteredModel.name).limit(limit + 1)
    if isinstance(after, str):
        query = query.where(RegisteredModel.name > after)
    if q:
        query = query.where(RegisteredModel.name.icontains(q, autoescape=True))
    if architecture:
        query = query.where(RegisteredModel.architecture == architecture)
    return session.scalars(query).all()


def update_model(
    *, session: Session, model: RegisteredModel, data: ModelUpdate, max_metadata_bytes: int
) -> RegisteredModel:
    """Apply the fields ``data`` sets: ``description`` (null clears it) and ``metadata`` (replaced whole)."""
    changes = data.changes(max_metadata_bytes=max_metadata_bytes)
    if changes:
        begin_write(session)
        row = session.get(RegisteredModel, model.id)
        if row is None:
            session.rollback()
            raise _model_not_found(model.name)
        for attribute, value in changes.items():
            setattr(row, attribute, value)
        session.commit()
    return refreshed(session=session, model=model)


def delete_model(*, session: Session, store: BlobStore, model: RegisteredModel) -> None:
    """Delete the model with its versions and aliases, then release the files no other version references."""
    from app.artifacts.service import artifact_hashes_of_model, release_blobs

    hashes = artifact_hashes_of_model(session=session, model_id=model.id)
    begin_write(session)
    row = session.get(RegisteredModel, model.id, with_for_update=True)
    if row is None:  # deleted meanwhile: its files were released by that delete
        session.rollback()
        return
    session.delete(row)
    session.commit()
    release_blobs(session=session, store=store, hashes=hashes)


def latest_versions(*, session: Session, model_ids: Sequence[int]) -> dict[int, int]:
    if not model_ids:
        return {}
    rows = session.execute(
        select(Version.model_id, func.max(Version.number))
        .where(Version.model_id.in_(model_ids))
        .group_by(Version.model_id)
    )
    return {model_id: number for model_id, number in rows}


def to_read(model: RegisteredModel, latest: int | None) -> ModelRead:
    return ModelRead(
        name=model.name,
        architecture=model.architecture,
        config=model.config,
        description=model.description,
        metadata=model.user_metadata,
        created_at=model.created_at,
        latest_version=latest,
        aliases={alias.name: alias.version_number for alias in sorted(model.aliases, key=lambda a: a.name)},
    )


def read_models(*, session: Session, models: Sequence[RegisteredModel]) -> list[ModelRead]:
    latest = latest_versions(session=session, model_ids=[m.id for m in models])
    return [to_read(model, latest.get(model.id)) for model in models]


def set_alias(*, session: Session, model: RegisteredModel, alias: str, version: Version) -> RegisteredModel:
    check_alias(alias)
    begin_write(session)
    existing = session.scalar(select(Alias).where(Alias.model_id == model.id, Alias.name == alias))
    if existing is None:
        session.add(
            Alias(model_id=model.id, name=alias, version_id=version.id, version_number=version.number)
        )
    else:
        existing.version_id = version.id
        existing.version_number = version.number
    session.commit()
    return refreshed(session=session, model=model)


def delete_alias(*, session: Session, model: RegisteredModel, alias: str) -> None:
    begin_write(session)
    existing = session.scalar(select(Alias).where(Alias.model_id == model.id, Alias.name == alias))
    if existing is not None:
        session.delete(existing)
    session.commit()


def refreshed(*, session: Session, model: RegisteredModel) -> RegisteredModel:
    session.expire_all()
    return get_model(session=session, name=model.name)
