"""/v1/models/{model}/uploads and /v1/uploads/{id}: resumable uploads, tus 1.0 (core, creation,
termination, expiration, checksum), ending in the same ingest as a direct upload."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from app.auth.policy import requires
from app.deps import DownloadUrlDep, RuntimeDep, SessionDep, ValidModel
from app.errors import UploadTimeout, WeightvaultError
from app.models.models import RegisteredModel
from app.ops.metrics import UPLOADS
from app.runtime import Runtime
from app.uploads import service, tus
from app.uploads.errors import InvalidUploadRequest, WrongContentType
from app.uploads.models import UploadSession
from app.uploads.schemas import UploadRead
from app.versions import service as versions_service
from app.versions.ingesting import create_version_from
from app.versions.receive import body_chunks, parse_metadata
from app.versions.service import ReceivedUpload

router = APIRouter(tags=["uploads"])
UploadId = Annotated[str, Path(description="The upload's id (from Location)", max_length=64)]
_BATCH_BYTES = 8 * 1024 * 1024
_MAX_FILENAME = 1024


def _rules(runtime: Runtime) -> service.SessionRules:
    settings = runtime.settings
    return service.SessionRules(
        max_upload_bytes=settings.max_upload_bytes,
        ttl_seconds=settings.upload_session_ttl_seconds,
        max_open_per_owner=settings.max_open_uploads_per_token,
    )


def _owner(request: Request) -> str:
    header = request.headers.get("authorization")
    return hashlib.sha256(header.encode()).hexdigest()[:32] if header else "anonymous"


def _headers(row: UploadSession) -> dict[str, str]:
    return {
        "Tus-Resumable": tus.VERSION,
        "Upload-Offset": str(row.offset),
        "Upload-Length": str(row.length),
        "Upload-Expires": tus.http_date(row.expires_at),
        "Cache-Control": "no-store",
    }


@router.options("/v1/uploads", status_code=204, dependencies=[requires(None)])
async def tus_options(runtime: RuntimeDep) -> Response:
    """tus discovery: the version, extensions, largest size and checksum algorithms this server takes."""
    return Response(
        status_code=204,
        headers={
            "Tus-Resumable": tus.VERSION,
            "Tus-Version": tus.VERSION,
            "Tus-Extension": tus.EXTENSIONS,
            "Tus-Max-Size": str(runtime.settings.max_upload_bytes),
            "Tus-Checksum-Algorithm": tus.CHECKSUM_ALGORITHMS,
        },
    )


@router.post(
    "/v1/models/{model}/uploads",
    status_code=201,
    response_class=Response,
    dependencies=[requires("write")],
)
def create_upload(request: Request, model: ValidModel, session: SessionDep, runtime: RuntimeDep) -> Response:
    """Start a resumable upload (tus creation): `Upload-Length` required, `Upload-Metadata` may carry
    `filename` and `metadata` (a JSON object); 201 with `Location`."""
    tus.check_version(request.headers.get("tus-resumable"))
    if "upload-defer-length" in request.headers:
        raise InvalidUploadRequest("Upload-Defer-Length is not supported; send Upload-Length.")
    length = tus.non_negative(request.headers.get("upload-length"), "Upload-Length")
    pairs = tus.parse_metadata(request.headers.get("upload-metadata"))
    filename = pairs.get("filename")
    if filename is not None and (len(filename) > _MAX_FILENAME or not filename.isprintable()):
        raise InvalidUploadRequest("The filename in Upload-Metadata is too long or not printable.")
    metadata = parse_metadata(pairs.get("metadata"), runtime.settings.max_metadata_bytes)
    row = service.create_session(
        session=session,
        data_dir=runtime.settings.data_dir,
        rules=_rules(runtime),
        model=model,
        owner=_owner(request),
        length=length,
        filename=filename,
        metadata=metadata,
    )
    headers = _headers(row)
    headers["Location"] = str(request.url_for("upload_status", upload_id=row.id))
    return Response(status_code=201, headers=headers)


@router.head("/v1/uploads/{upload_id}", response_class=Response, dependencies=[requires("read")])
def upload_offset(
    upload_id: UploadId, request: Request, session: SessionDep, runtime: RuntimeDep
) -> Response:
    """The bytes received so far (`Upload-Offset`), to resume from."""
    tus.check_version(request.headers.get("tus-resumable"))
    row = service.get_session(session=session, data_dir=runtime.settings.data_dir, upload_id=upload_id)
    return Response(status_code=200, headers=_headers(row))


@router.patch(
    "/v1/uploads/{upload_id}",
    status_code=204,
    response_class=Response,
    dependencies=[requires("write")],
)
async def append_upload(
    upload_id: UploadId, request: Request, session: SessionDep, runtime: RuntimeDep
) -> Response:
    """Append bytes at `Upload-Offset` (`Content-Type: application/offset+octet-stream`, optional
    `Upload-Checksum: sha256 <base64>`); after the last byte the file is ingested like a direct upload."""
    tus.check_version(request.headers.get("tus-resumable"))
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != tus.OFFSET_CONTENT_TYPE:
        raise WrongContentType(f"A PATCH body must be sent as Content-Type: {tus.OFFSET_CONTENT_TYPE}.")
    offset = tus.non_negative(request.headers.get("upload-offset"), "Upload-Offset")
    checksum = tus.parse_checksum(request.headers.get("upload-checksum"))
    data_dir = runtime.settings.data_dir
    row = await run_in_threadpool(
        service.get_session, session=session, data_dir=data_dir, upload_id=upload_id
    )
    appender = await run_in_threadpool(
        service.begin_patch, row, data_dir=data_dir, offset=offset, checksum=checksum
    )
    await run_in_threadpool(session.close)  # hold no connection during the transfer
    try:
        timed_out = await _receive(request, runtime, appender)
        new_offset = await run_in_threadpool(appender.commit, complete_body=timed_out is None)
        sha256 = appender.sha256()
    except BaseException:
        await run_in_threadpool(appender.rewind)
        raise
    finally:
        await run_in_threadpool(appender.close)
    row = await run_in_threadpool(
        service.record_offset, session=session, upload_id=upload_id, offset=new_offset
    )
    if timed_out is not None:
        raise timed_out
    if row.state == "ingesting":
        row = await _ingest(row, sha256, session, runtime)
    headers = _headers(row)
    headers["Weightvault-Upload-State"] = row.state
    return Response(status_code=204, headers=headers)


async def _receive(request: Request, runtime: Runtime, appender: service.Appender) -> UploadTimeout | None:
    """Write the body in batches; a body cut short keeps what arrived (returns the timeout, if any)."""
    batch = bytearray()
    try:
        async for chunk in body_chunks(request, runtime.upload_limits):
            batch += chunk
            if len(batch) >= _BATCH_BYTES:
                await run_in_threadpool(appender.write, bytes(batch))
                batch.clear()
    except UploadTimeout as exc:
        await run_in_threadpool(appender.write, bytes(batch))
        return exc
    except ClientDisconnect:
        await run_in_threadpool(appender.write, bytes(batch))
        return UploadTimeout("The connection closed before the PATCH body ended; HEAD and resume.")
    if batch:
        await run_in_threadpool(appender.write, bytes(batch))
    return None


async def _ingest(row: UploadSession, sha256: str, session: Session, runtime: Runtime) -> UploadSession:
    upload_id, length, filename, metadata = row.id, row.length, row.filename, dict(row.user_metadata)
    model = await run_in_threadpool(session.get, RegisteredModel, row.model_id)
    number: int | None = None
    error: WeightvaultError | None = None
    with (
        runtime.store.staging() as workdir,
        service.received_file(runtime.settings.data_dir, upload_id, workdir) as path,
    ):
        received = ReceivedUpload(path=path, size=length, sha256=sha256, filename=filename)
        try:
            assert model is not None
            version = await create_version_from(
                runtime=runtime,
                session=session,
                model=model,
                upload=received,
                metadata=metadata,
                workdir=workdir,
            )
            number = version.number
            UPLOADS.labels("accepted").inc()
        except WeightvaultError as exc:
            error = exc
            UPLOADS.labels(exc.code).inc()
    return await run_in_threadpool(
        service.record_outcome, session=session, upload_id=upload_id, version_number=number, error=error
    )


@router.get("/v1/uploads/{upload_id}", name="upload_status", dependencies=[requires("read")])
def upload_status(
    upload_id: UploadId, session: SessionDep, runtime: RuntimeDep, url: DownloadUrlDep
) -> UploadRead:
    """The upload's progress and outcome: `state` receiving, ingesting, done (with `version`) or failed
    (with `error`, the body a direct upload would have been answered)."""
    row = service.get_session(session=session, data_dir=runtime.settings.data_dir, upload_id=upload_id)
    model = session.get(RegisteredModel, row.model_id)
    assert model is not None  # the session row goes with its model (ON DELETE CASCADE)
    version = None
    if row.version_number is not None:
        found = versions_service.resolve_version(session=session, model=model, ref=str(row.version_number))
        version = versions_service.to_read(found, model=model, url=url)
    return UploadRead(
        id=row.id,
        model=model.name,
        offset=row.offset,
        length=row.length,
        state=row.state,
        filename=row.filename,
        version=version,
        error=row.error,
        expires_at=row.expires_at,
    )


@router.delete(
    "/v1/uploads/{upload_id}",
    status_code=204,
    response_class=Response,
    dependencies=[requires("write")],
)
def delete_upload(
    upload_id: UploadId, request: Request, session: SessionDep, runtime: RuntimeDep
) -> Response:
    """End an upload (tus termination): its received bytes are freed."""
    tus.check_version(request.headers.get("tus-resumable"))
    row = service.get_session(session=session, data_dir=runtime.settings.data_dir, upload_id=upload_id)
    service.discard(session=session, data_dir=runtime.settings.data_dir, row=row)
    return Response(status_code=204, headers={"Tus-Resumable": tus.VERSION})
