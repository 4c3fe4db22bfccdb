"""FastAPI dependencies as ``Annotated`` aliases; lookups that can 404 are validating dependencies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.orm import Session

from app.api.pagination import PageParams, page_params
from app.architectures.registry import ArchitectureRegistry
from app.artifacts.naming import DownloadUrl
from app.models import service as models_service
from app.models.models import RegisteredModel
from app.runtime import Runtime
from app.settings import Settings
from app.storage.blobstore import BlobStore
from app.versions import service as versions_service
from app.versions.models import Version


# Plain attribute reads: async so FastAPI does not hop to a worker thread for each of them.
async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_settings_dep(runtime: RuntimeDep) -> Settings:
    return runtime.settings


async def get_store(runtime: RuntimeDep) -> BlobStore:
    return runtime.store


async def get_registry(runtime: RuntimeDep) -> ArchitectureRegistry:
    return runtime.registry


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    with runtime.sessions() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StoreDep = Annotated[BlobStore, Depends(get_store)]
RegistryDep = Annotated[ArchitectureRegistry, Depends(get_registry)]
SessionDep = Annotated[Session, Depends(get_session)]
PageDep = Annotated[PageParams, Depends(page_params)]

ModelName = Annotated[str, Path(description="Model name", max_length=1024)]
Ref = Annotated[str, Path(description="Version number, alias or 'latest'", max_length=1024)]


async def get_download_url(request: Request) -> DownloadUrl:
    """Artifact download URLs built from the request (scheme, host and root path as the client used)."""

    def build(*, model: str, version: int, kind: str, fmt: str) -> str:
        url = request.url_for("download_artifact", model=model, ref=str(version), kind=kind)
        return str(url.include_query_params(format=fmt))

    return build


DownloadUrlDep = Annotated[DownloadUrl, Depends(get_download_url)]


def valid_model(session: SessionDep, model: ModelName) -> RegisteredModel:
    return models_service.get_model(session=session, name=model)


ValidModel = Annotated[RegisteredModel, Depends(valid_model)]


def valid_version(session: SessionDep, model: ValidModel, ref: Ref) -> Version:
    return versions_service.resolve_version(session=session, model=model, ref=ref)


ValidVersion = Annotated[Version, Depends(valid_version)]
