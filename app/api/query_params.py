"""Refuse query parameters the matched route does not declare: a misspelt filter must not widen a result."""

from __future__ import annotations

from fastapi import Request
from fastapi.dependencies.utils import get_flat_params
from fastapi.params import Query
from fastapi.routing import APIRoute

from app.errors import InvalidRequest

# Set once per route on first use; routes are not hashable (Starlette defines __eq__), so no dict cache.
_ALLOWED_ATTR = "_weightvault_query_params"


def declared_query_params(route: APIRoute) -> frozenset[str]:
    """The query parameter names ``route`` and all of its dependencies declare (aliases as sent)."""
    allowed: frozenset[str] | None = getattr(route, _ALLOWED_ATTR, None)
    if allowed is None:
        allowed = frozenset(
            field.alias for field in get_flat_params(route.dependant) if isinstance(field.field_info, Query)
        )
        setattr(route, _ALLOWED_ATTR, allowed)
    return allowed


async def reject_unknown_query_params(request: Request) -> None:
    """App-wide dependency: 422 ``invalid_request`` naming each unknown parameter and the allowed ones."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    allowed = declared_query_params(route)
    unknown = sorted({name for name in request.query_params if name not in allowed})
    if not unknown:
        return
    names = ", ".join(f"'{name[:100]}'" for name in unknown[:10])
    accepts = ", ".join(sorted(allowed)) if allowed else "no query parameters"
    raise InvalidRequest(
        f"Unknown query parameter{'s' if len(unknown) > 1 else ''} {names}; this endpoint accepts {accepts}.",
        {"unknown": [name[:100] for name in unknown[:10]], "allowed": sorted(allowed)},
    )
