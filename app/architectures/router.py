"""/v1/architectures: list and read them all; register and delete the ones registered over HTTP."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.api.pagination import Page, page_of
from app.architectures import service
from app.architectures.schemas import ArchitectureCreate, ArchitectureRead
from app.auth.policy import requires
from app.deps import PageDep, RegistryDep, RuntimeDep, SessionDep

router = APIRouter(prefix="/v1/architectures", tags=["architectures"])


@router.get("", dependencies=[requires("read")])
def list_architectures(registry: RegistryDep, page: PageDep) -> Page[ArchitectureRead]:
    found = [a for a in registry.all() if page.after is None or a.name > str(page.after)]
    items, cursor = page_of(found[: page.limit + 1], page, key=lambda a: a.name)
    return Page(items=[ArchitectureRead.of(arch) for arch in items], next_cursor=cursor)


@router.post("", status_code=201, dependencies=[requires("write")])
def register_architecture(
    data: ArchitectureCreate, session: SessionDep, registry: RegistryDep, runtime: RuntimeDep
) -> ArchitectureRead:
    """Register a model class from a transformers config or an allowed library's constructor."""
    arch = service.register_architecture(
        session=session,
        registry=registry,
        prober=runtime.ingester,
        data=data,
        allowed_libraries=runtime.settings.architecture_libraries,
        max_parameters=runtime.settings.max_architecture_parameters,
    )
    return ArchitectureRead.of(arch)


@router.get("/{arch}", dependencies=[requires("read")])
def get_architecture(arch: str, registry: RegistryDep) -> ArchitectureRead:
    return ArchitectureRead.of(registry.get(arch))


@router.delete("/{arch}", status_code=204, dependencies=[requires("admin")])
def delete_architecture(arch: str, session: SessionDep, registry: RegistryDep) -> Response:
    service.delete_architecture(session=session, registry=registry, name=arch)
    return Response(status_code=204)
