"""Which scope a route needs, declared next to the route: ``dependencies=[requires("write")]``.

docs/api.md, Conventions: Auth: GET/HEAD need ``read``; uploads, aliases, conversions and edits
``write``; deletes of models, versions and architectures ``admin``; ``/healthz``, ``/readyz``, ``/metrics`` and the
docs none (``requires(None)``).

The declaration is what enforces it. ``authorize``, the app's first dependency, runs the matched route's
requirement before anything else looks at the request, so a caller without access learns nothing about
the parameters; the route's own dependency then finds the check done. An API route that declares nothing
needs ``admin`` (closed by default); ``tests/api/test_auth.py`` walks every route so none ships without a
declaration. Unknown paths match no route: they are 404 for everyone, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, FastAPI, Request, params
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from app.auth.service import Scope, require_scope, verify
from app.runtime import Runtime

# request.state attribute: the scope this request was already checked for.
_CHECKED = "weightvault_checked_scope"


@dataclass(frozen=True)
class Requirement:
    """A route's access rule: a token with at least ``scope``, or nothing when ``scope`` is None."""

    scope: Scope | None

    async def __call__(self, request: Request) -> None:
        runtime: Runtime = request.app.state.runtime
        if self.scope is None or not runtime.settings.auth_enabled:
            return
        if getattr(request.state, _CHECKED, None) == self.scope:
            return
        header = request.headers.get("authorization")
        needed: Scope = self.scope

        def check() -> None:
            with runtime.sessions() as session:
                require_scope(verify(session=session, authorization=header), needed)

        await run_in_threadpool(check)
        setattr(request.state, _CHECKED, needed)


def requires(scope: Scope | None) -> params.Depends:
    """The dependency a route lists to declare (and enforce) the scope it needs; None: public."""
    dependency: params.Depends = Depends(Requirement(scope))
    return dependency


CLOSED = Requirement("admin")


def declared_requirement(route: APIRoute) -> Requirement | None:
    """The one requirement ``route`` declares, or None when it declares none (or, wrongly, several)."""
    found = [dep.dependency for dep in route.dependencies if isinstance(dep.dependency, Requirement)]
    return found[0] if len(found) == 1 else None


def declare_docs_public(app: FastAPI) -> None:
    """The documentation pages FastAPIOffline adds list no dependency of ours: declare them public, as
    ``/openapi.json`` (a plain route) is."""
    for route in app.router.routes:
        if isinstance(route, APIRoute) and route.endpoint.__module__.startswith("fastapi_offline"):
            route.dependencies.append(requires(None))


async def authorize(request: Request) -> None:
    """App-wide, first: enforce the matched route's declared requirement before its parameters are read."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    await (declared_requirement(route) or CLOSED)(request)
