"""/v1/models and aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.api.names import check_alias
from app.api.pagination import Page, PageParams, bind_filters, page_of
from app.auth.policy import requires
from app.db.engine import read_connection
from app.db.raw_reads import ReadConnection
from app.deps import (
    ModelName,
    PageDep,
    RegistryDep,
    RuntimeDep,
    SessionDep,
    SettingsDep,
    StoreDep,
    ValidModel,
)
from app.models import service
from app.models.schemas import AliasSet, ModelCreate, ModelRead, ModelUpdate
from app.versions.service import resolve_version

router = APIRouter(prefix="/v1/models", tags=["models"])

NameContains = Annotated[
    str | None,
    Query(
        max_length=128,
        description="Only models whose name contains this text (case-insensitive; % and _ match literally).",
    ),
]
ArchitectureFilter = Annotated[
    str | None, Query(max_length=128, description="Only models of this architecture.")
]


@router.post("", status_code=201, dependencies=[requires("write")])
def create_model(
    data: ModelCreate, session: SessionDep, registry: RegistryDep, settings: SettingsDep
) -> ModelRead:
    model = service.create_model(
        session=session, registry=registry, data=data, max_metadata_bytes=settings.max_metadata_bytes
    )
    return service.to_read(model, None)


# The reads are one or two indexed statements on a connection without a transaction. They stay sync
# endpoints (one hop to the thread pool): a slow database or an exhausted connection pool must never
# stall the event loop that streams every upload and download of this process.
@router.get("", dependencies=[requires("read")])
def list_models(
    runtime: RuntimeDep, page: PageDep, q: NameContains = None, architecture: ArchitectureFilter = None
) -> Page[ModelRead]:
    """Models in name order; a cursor continues the filtered list it came from."""
    with read_connection(runtime.engine) as conn:
        return model_page(conn=conn, page=page, q=q, architecture=architecture)


def model_page(
    *, conn: ReadConnection, page: PageParams, q: str | None, architecture: str | None
) -> Page[ModelRead]:
    """``GET /v1/models`` once its parameters are parsed (also answered by ``app.api.fast_reads``)."""
    filters = bind_filters(page, {"q": q.lower() if q else q, "architecture": architecture})
    found = service.read_model_list(
        conn=conn,
        limit=page.limit,
        after=page.after,
        q=filters.get("q", ""),
        architecture=filters.get("architecture", ""),
    )
    rows, cursor = page_of(found, page, key=lambda m: m.name, filters=filters)
    return Page(items=rows, next_cursor=cursor)


@router.get("/{model}", dependencies=[requires("read")])
def get_model(model: ModelName, runtime: RuntimeDep) -> ModelRead:
    with read_connection(runtime.engine) as conn:
        return model_record(conn=conn, model=model)


def model_record(*, conn: ReadConnection, model: str) -> ModelRead:
    """``GET /v1/models/{model}`` (also answered by ``app.api.fast_reads``)."""
    return service.read_model(conn=conn, name=model)


@router.patch("/{model}", dependencies=[requires("write")])
def update_model(
    model: ValidModel, data: ModelUpdate, session: SessionDep, settings: SettingsDep
) -> ModelRead:
    """Change the description and/or replace the metadata (fields left out are kept)."""
    updated = service.update_model(
        session=session, model=model, data=data, max_metadata_bytes=settings.max_metadata_bytes
    )
    return service.read_models(session=session, models=[updated])[0]


@router.delete("/{model}", status_code=204, dependencies=[requires("admin")])
def delete_model(model: ValidModel, session: SessionDep, store: StoreDep) -> Response:
    service.delete_model(session=session, store=store, model=model)
    return Response(status_code=204)


@router.put("/{model}/aliases/{alias}", dependencies=[requires("write")])
def set_alias(model: ValidModel, alias: str, data: AliasSet, session: SessionDep) -> ModelRead:
    check_alias(alias)
    version = resolve_version(session=session, model=model, ref=str(data.version))
    updated = service.set_alias(session=session, model=model, alias=alias, version=version)
    return service.read_models(session=session, models=[updated])[0]


@router.delete("/{model}/aliases/{alias}", status_code=204, dependencies=[requires("write")])
def delete_alias(model: ValidModel, alias: str, session: SessionDep) -> Response:
    service.delete_alias(session=session, model=model, alias=alias)
    return Response(status_code=204)
