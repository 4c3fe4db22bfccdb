"""/v1/models/{model}/versions"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.api.pagination import Page, page_of
from app.auth.policy import requires
from app.deps import (
    DownloadUrlDep,
    PageDep,
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
        version = await run_in_threadpool(
            lambda: service.create_version(
                session=session,
                store=runtime.store,
                registry=runtime.registry,
                limits=runtime.read_limits,
                model=model,
                upload=received,
                metadata=user_metadata,
                workdir=workdir,
            )
        )
    return version


@router.get("", dependencies=[requires("read")])
def list_versions(
    model: ValidModel, session: SessionDep, page: PageDep, url: DownloadUrlDep
) -> Page[VersionRead]:
    rows = list(service.list_versions(session=session, model=model, limit=page.limit, after=page.after))
    items, cursor = page_of(rows, page, key=lambda v: v.number)
    return Page(items=[service.to_read(v, model=model, url=url) for v in items], next_cursor=cursor)


@router.get("/{ref}", dependencies=[requires("read")])
def get_version(model: ValidModel, version: ValidVersion, url: DownloadUrlDep) -> VersionRead:
    return service.to_read(version, model=model, url=url)


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
