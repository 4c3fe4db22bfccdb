"""/v1/models/{model}/versions"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.api.pagination import Page, PageParams, bind_filters, page_of
from app.artifacts.naming import DownloadUrl
from app.artifacts.urls import download_urls
from app.auth.policy import requires
from app.db.engine import read_connection
from app.db.raw_reads import ReadConnection
from app.deps import (
    DownloadUrlDep,
    ModelName,
    PageDep,
    Ref,
    RuntimeDep,
    SessionDep,
    SettingsDep,
    StoreDep,
    ValidModel,
    ValidVersion,
)
from app.errors import WeightvaultError
from app.models.models import RegisteredModel
from app.ops.metrics import UPLOADS
from app.runtime import Runtime
from app.versions import service
from app.versions.ingesting import create_version_from
from app.versions.models import Version
from app.versions.receive import receive_upload
from app.versions.schemas import VersionRead, VersionUpdate

router = APIRouter(prefix="/v1/models/{model}/versions", tags=["versions"])

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "metadata": {"type": "string", "description": "A JSON object"},
                    },
                }
            },
        },
    }
}


@router.post("", status_code=201, openapi_extra=_UPLOAD_BODY, dependencies=[requires("write")])
async def upload_version(
    request: Request,
    model: ValidModel,
    session: SessionDep,
    runtime: RuntimeDep,
    url: DownloadUrlDep,
    metadata: Annotated[str | None, Query(description="User metadata: a JSON object")] = None,
) -> VersionRead:
    """Upload a checkpoint (raw body or multipart field `file`); 201 once it was loaded, run and stored."""
    # Release the connection (and any read snapshot) before a possibly long transfer.
    await run_in_threadpool(session.close)
    try:
        version = await _receive_and_ingest(request, model, session, runtime, metadata)
    except WeightvaultError as exc:
        UPLOADS.labels(exc.code).inc()
        raise
    UPLOADS.labels("accepted").inc()
    return service.to_read(version, model=model, url=url)


async def _receive_and_ingest(
    request: Request, model: RegisteredModel, session: Session, runtime: Runtime, metadata: str | None
) -> Version:
    with runtime.store.staging() as workdir:
        received, user_metadata = await receive_upload(
            request, dest=workdir / "upload", limits=runtime.upload_limits, metadata_param=metadata
        )
        version = await create_version_from(
            runtime=runtime,
            session=session,
            model=model,
            upload=received,
            metadata=user_metadata,
            workdir=workdir,
        )
    return version


# Reads query inline without a transaction, as sync endpoints (see app/models/router.py).
@router.get("", dependencies=[requires("read")])
def list_versions(
    request: Request,
    model: ModelName,
    runtime: RuntimeDep,
    page: PageDep,
    order: Annotated[
        Literal["asc", "desc"] | None,
        Query(description="Version number order, 'asc' by default; 'desc' lists the newest first."),
    ] = None,
) -> Page[VersionRead]:
    url = download_urls(request)
    with read_connection(runtime.engine) as conn:
        return version_page(conn=conn, url=url, model=model, page=page, order=order)


def version_page(
    *, conn: ReadConnection, url: DownloadUrl, model: str, page: PageParams, order: str | None
) -> Page[VersionRead]:
    """``GET .../versions`` once its parameters are parsed (also answered by ``app.api.fast_reads``)."""
    # A cursor continues the order it was made in; "asc" is the unfiltered list.
    filters = bind_filters(page, {"order": None if order is None else ("" if order == "asc" else order)})
    newest_first = filters.get("order") == "desc"
    rows = service.read_version_page(
        conn=conn, model=model, limit=page.limit, after=page.after, newest_first=newest_first, url=url
    )
    items, cursor = page_of(rows, page, key=lambda v: v.version, filters=filters)
    return Page(items=items, next_cursor=cursor)


@router.get("/{ref}", dependencies=[requires("read")])
def get_version(request: Request, model: ModelName, ref: Ref, runtime: RuntimeDep) -> VersionRead:
    url = download_urls(request)
    with read_connection(runtime.engine) as conn:
        return version_record(conn=conn, url=url, model=model, ref=ref)


def version_record(*, conn: ReadConnection, url: DownloadUrl, model: str, ref: str) -> VersionRead:
    """``GET .../versions/{ref}`` (also answered by ``app.api.fast_reads``)."""
    return service.read_version(conn=conn, model=model, ref=ref, url=url)


@router.patch("/{ref}", dependencies=[requires("write")])
def update_version(
    model: ValidModel,
    version: ValidVersion,
    data: VersionUpdate,
    session: SessionDep,
    settings: SettingsDep,
    url: DownloadUrlDep,
) -> VersionRead:
    """Change the description and/or replace the metadata (fields left out are kept)."""
    updated = service.update_version(
        session=session, version=version, data=data, max_metadata_bytes=settings.max_metadata_bytes
    )
    return service.to_read(updated, model=model, url=url)


REMOVED_ALIASES_HEADER = "X-Weightvault-Removed-Aliases"


@router.delete(
    "/{ref}",
    status_code=204,
    dependencies=[requires("admin")],
    responses={
        204: {
            "description": "Deleted",
            "headers": {
                REMOVED_ALIASES_HEADER: {
                    "description": "The aliases removed with the version (force), comma-separated",
                    "schema": {"type": "string"},
                }
            },
        },
        409: {"description": "`alias_in_use`: an alias points at the version (`details.aliases`)"},
    },
)
def delete_version(
    version: ValidVersion,
    session: SessionDep,
    store: StoreDep,
    force: Annotated[
        bool, Query(description="Also remove the aliases that point at the version (else 409 alias_in_use).")
    ] = False,
) -> Response:
    removed = service.delete_version(session=session, store=store, version=version, force=force)
    headers = {REMOVED_ALIASES_HEADER: ", ".join(removed)} if removed else None
    return Response(status_code=204, headers=headers)
