"""Create, read, search, edit and delete models; set and remove aliases."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Row, Select, bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.api.metadata import check_metadata
from app.api.names import NAME_CHARS, check_alias, check_name, is_valid_name
from app.architectures.registry import ArchitectureRegistry
from app.architectures.service import hold_registration
from app.db.engine import begin_write
from app.db.name_search import match_phrase, trigram_match, uses_trigram_index
from app.db.raw_reads import ReadConnection
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
    hold_registration(session=session, architecture=architecture)
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
        raise model_not_found(name)
    return model


def model_not_found(name: str) -> ModelNotFound:
    """The 404 for a model name (cut to 200 characters)."""
    return ModelNotFound(
        f"No model named '{name[:200]}'; create it with POST /v1/models.", {"model": name[:200]}
    )


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
            raise model_not_found(model.name)
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


# The hot reads are Core statements over the tables, built once with bind parameters: the ORM's
# compile step and the per-call statement building and cache-key work were a third of a GET's CPU.
_models = RegisteredModel.__table__.c
_aliases = Alias.__table__.c
_versions = Version.__table__.c
_MODEL_COLUMNS = (
    _models.id,
    _models.name,
    _models.architecture,
    _models.config,
    _models.description,
    _models.metadata,
    _models.created_at,
    # The latest version number, by the (model_id, number) index.
    select(func.max(_versions.number))
    .where(_versions.model_id == _models.id)
    .scalar_subquery()
    .label("latest_version"),
)
_READ_MODEL = (
    select(*_MODEL_COLUMNS, _aliases.name.label("alias"), _aliases.version_number)
    .outerjoin_from(RegisteredModel.__table__, Alias.__table__, _aliases.model_id == _models.id)
    .where(_models.name == bindparam("name"))
    .order_by(_aliases.name)
)
_READ_ALIASES = (
    select(_aliases.model_id, _aliases.name, _aliases.version_number)
    .where(_aliases.model_id.in_(bindparam("ids", expanding=True)))
    .order_by(_aliases.model_id, _aliases.name)
)


@lru_cache(maxsize=16)
def _model_list_statement(after: bool, q: bool, architecture: bool, trigram: bool) -> Select[Any]:
    query = select(*_MODEL_COLUMNS).order_by(_models.name).limit(bindparam("limit"))
    if after:
        query = query.where(_models.name > bindparam("after"))
    if q:
        query = query.where(func.lower(_models.name).like(bindparam("pattern"), escape="/"))
    if trigram:
        query = query.where(trigram_match(_models.id))
    if architecture:
        query = query.where(_models.architecture == bindparam("architecture"))
    return query


def _model_read(row: Row[*tuple[Any, ...]], aliases: dict[str, int]) -> ModelRead:
    return ModelRead(
        name=row.name,
        architecture=row.architecture,
        config=row.config,
        description=row.description,
        metadata=row.metadata,
        created_at=row.created_at,
        latest_version=row.latest_version,
        aliases=aliases,
    )


def read_model(*, conn: ReadConnection, name: str) -> ModelRead:
    """A model as the API shows it, in one statement (the aliases joined); raises ``ModelNotFound``."""
    if not is_valid_name(name):
        raise model_not_found(name)
    rows = conn.execute(_READ_MODEL, {"name": name}).all()
    if not rows:
        raise model_not_found(name)
    aliases = {row.alias: row.version_number for row in rows if row.alias is not None}
    return _model_read(rows[0], aliases)


def read_model_list(
    *, conn: ReadConnection, limit: int, after: Any | None, q: str = "", architecture: str = ""
) -> list[ModelRead]:
    """Up to ``limit + 1`` models in name order after ``after``: those whose name contains ``q``
    (case-insensitive, ``%`` and ``_`` literal) and with ``architecture``, when given. One statement for
    the models, one for their aliases."""
    if q and not NAME_CHARS.issuperset(q.lower()):
        return []  # no name holds it (and a NUL is no text PostgreSQL or FTS5 accepts)
    has_after = isinstance(after, str)
    params: dict[str, Any] = {"limit": limit + 1, "after": after, "architecture": architecture}
    trigram = bool(q) and uses_trigram_index(conn, q.lower())
    if q:
        escaped = q.lower().replace("/", "//").replace("%", "/%").replace("_", "/_")
        params["pattern"] = f"%{escaped}%"
        params["phrase"] = match_phrase(q.lower())
    statement = _model_list_statement(has_after, bool(q), bool(architecture), trigram)
    rows = conn.execute(statement, params).all()
    aliases: dict[int, dict[str, int]] = {row.id: {} for row in rows}
    if rows:
        for model_id, alias, number in conn.execute(_READ_ALIASES, {"ids": list(aliases)}):
            aliases[model_id][alias] = number
    return [_model_read(row, aliases[row.id]) for row in rows]


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
