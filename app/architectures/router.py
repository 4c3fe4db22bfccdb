"""GET /v1/architectures[/{arch}]"""

from __future__ import annotations

from fastapi import APIRouter

from app.api.pagination import Page, page_of
from app.architectures.schemas import ArchitectureRead
from app.auth.policy import requires
from app.deps import PageDep, RegistryDep

router = APIRouter(prefix="/v1/architectures", tags=["architectures"])


@router.get("", dependencies=[requires("read")])
def list_architectures(registry: RegistryDep, page: PageDep) -> Page[ArchitectureRead]:
    names = [a.name for a in registry.all() if page.after is None or a.name > str(page.after)]
    items, cursor = page_of(names[: page.limit + 1], page, key=lambda name: name)
    return Page(items=[ArchitectureRead.of(registry.get(name)) for name in items], next_cursor=cursor)


@router.get("/{arch}", dependencies=[requires("read")])
def get_architecture(arch: str, registry: RegistryDep) -> ArchitectureRead:
    return ArchitectureRead.of(registry.get(arch))
