"""/v1/models/{model}/versions/{ref}/artifacts"""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from app.api.pagination import Page
from app.artifacts import service, stored
from app.artifacts.naming import download_filename, media_type
from app.artifacts.responses import BlobResponse, ComposedResponse, etag_matches
from app.artifacts.schemas import ArtifactRead
from app.auth.policy import requires
from app.deps import DownloadUrlDep, StoreDep, ValidModel, ValidVersion
from app.storage.crc32 import crc32_hex

router = APIRouter(prefix="/v1/models/{model}/versions/{ref}/artifacts", tags=["artifacts"])


@router.get("", dependencies=[requires("read")])
def list_artifacts(model: ValidModel, version: ValidVersion, url: DownloadUrlDep) -> Page[ArtifactRead]:
    items = [service.to_read(a, model=model.name, version=version.number, url=url) for a in version.artifacts]
    return Page(items=items, next_cursor=None)


_STRING = {"type": "string"}
_DOWNLOAD_HEADERS = {
    "ETag": {"description": 'The sha256 of the whole download, quoted: "<sha256>"', "schema": _STRING},
    "X-Weightvault-Sha256": {"description": "The sha256 of the whole download", "schema": _STRING},
    "X-Weightvault-Crc32": {
        "description": "The CRC-32 (zlib's) of the whole download as 8 hex digits; absent for artifacts "
        "stored before it was recorded",
        "schema": {"type": "string", "pattern": "^[0-9a-f]{8}$"},
    },
}
_DOWNLOAD_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "content": {"application/octet-stream": {}},
        "description": "The artifact's bytes",
        "headers": _DOWNLOAD_HEADERS,
    },
    206: {"description": "The requested byte range", "headers": _DOWNLOAD_HEADERS},
    304: {"description": "Not modified (If-None-Match matched the ETag)", "headers": _DOWNLOAD_HEADERS},
}


@router.head(
    "/{kind}",
    response_class=BlobResponse,
    responses=_DOWNLOAD_RESPONSES,
    operation_id="head_artifact",
    name="head_artifact",
    dependencies=[requires("read")],
)
@router.get(
    "/{kind}",
    response_class=BlobResponse,
    responses=_DOWNLOAD_RESPONSES,
    operation_id="download_artifact",
    name="download_artifact",
    dependencies=[requires("read")],
)
def download_artifact(
    kind: str,
    model: ValidModel,
    version: ValidVersion,
    store: StoreDep,
    format: Annotated[str | None, Query(max_length=64)] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The artifact's bytes; ETag is the sha256, Range gives 206, If-None-Match gives 304."""
    artifact = service.find_artifact(version=version, kind=kind, fmt=format)
    etag = f'"{artifact.sha256}"'
    packaging = service.packaging_of(artifact)
    filename = download_filename(model.name, version.number, artifact.kind, artifact.format, packaging)
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Cache-Control": "private, max-age=0, must-revalidate",
        "X-Weightvault-Sha256": artifact.sha256,
    }
    if artifact.crc32 is not None:
        headers["X-Weightvault-Crc32"] = crc32_hex(artifact.crc32)
    if etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    if stored.is_recipe(artifact):
        recipe = stored.recipe_of(store=store, artifact=artifact)
        assert artifact.recipe_sha256 is not None
        return ComposedResponse(
            recipe,
            store,
            recipe_stat=os.stat(store.path_for(artifact.recipe_sha256)),
            headers=headers,
            media_type=media_type(packaging, artifact.format),
        )
    path = store.path_for(artifact.sha256)
    return BlobResponse(
        path,
        headers=headers,
        media_type=media_type(packaging, artifact.format),
        stat_result=os.stat(path),
    )
