"""Keyset pagination: ``?limit=&cursor=`` in, ``{"items", "next_cursor"}`` out."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query, Request
from pydantic import BaseModel

from app.errors import InvalidCursor

DEFAULT_LIMIT = 50
MAX_LIMIT = 500

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


class PageParams(BaseModel):
    limit: int
    after: Any | None
    # The filters of the list the cursor came from (empty without a cursor or for an unfiltered list).
    filters: dict[str, str] = {}
    has_cursor: bool = False


MAX_FILTERS = 8
MAX_FILTER_CHARS = 1024


def encode_cursor(value: Any, filters: Mapping[str, str] | None = None) -> str:
    body: dict[str, Any] = {"after": value}
    if filters:
        body["filters"] = dict(filters)
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


def _valid_filters(filters: Any) -> bool:
    return (
        isinstance(filters, dict)
        and len(filters) <= MAX_FILTERS
        and all(isinstance(value, str) and len(value) <= MAX_FILTER_CHARS for value in filters.values())
    )


def decode_cursor(cursor: str) -> tuple[Any, dict[str, str]]:
    """The cursor's position and the filters of the list it belongs to; raises ``InvalidCursor``."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        body = json.loads(base64.urlsafe_b64decode(padded.encode()))
        after, filters = body["after"], body.get("filters", {})
    except (ValueError, KeyError, TypeError, RecursionError):
        after, filters = None, None
    # Cursors carry a version number, a job sequence number or a name; anything else was not ours.
    valid_int = isinstance(after, int) and not isinstance(after, bool) and 0 <= after < 2**62
    valid_str = isinstance(after, str) and len(after) <= 256
    if not ((valid_int or valid_str) and _valid_filters(filters)):
        raise InvalidCursor(
            "The cursor is not one this server gave out; pass next_cursor from the previous page unchanged."
        )
    return after, filters


async def page_params(
    request: Request,
    limit: Annotated[
        int, Query(ge=1, description="Page size; larger values are capped (500 by default).")
    ] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=4096)] = None,
) -> PageParams:
    cap = (
        request.app.state.runtime.settings.max_page_size
        if hasattr(request.app.state, "runtime")
        else MAX_LIMIT
    )
    return make_page_params(limit=limit, cursor=cursor, cap=cap)


def make_page_params(*, limit: int, cursor: str | None, cap: int) -> PageParams:
    """``?limit=&cursor=`` as a page to fetch (the limit capped at ``cap``); raises ``InvalidCursor``."""
    after, filters = decode_cursor(cursor) if cursor else (None, {})
    return PageParams(limit=min(limit, cap), after=after, filters=filters, has_cursor=bool(cursor))


def page_of(
    rows: list[T], params: PageParams, key: Any, filters: Mapping[str, str] | None = None
) -> tuple[list[T], str | None]:
    """Split a ``limit + 1`` fetch into the page and the cursor of the next one (bound to ``filters``)."""
    if len(rows) > params.limit:
        rows = rows[: params.limit]
        return rows, encode_cursor(key(rows[-1]), filters)
    return rows, None


def bind_filters(params: PageParams, given: Mapping[str, str | None]) -> dict[str, str]:
    """The filters a page lists under: those given, else (with a cursor) the cursor's own.

    A cursor continues the list it came from; the same filters may be sent with it (clients resend the
    whole query) or left out, but different ones are ``invalid_cursor``. Empty values mean no filter.
    """
    effective: dict[str, str] = {}
    for name, value in given.items():
        if value is None:
            value = params.filters.get(name, "")
        elif params.has_cursor and value != params.filters.get(name, ""):
            raise InvalidCursor(
                f"This cursor continues a list with {name}={params.filters.get(name, '')!r}, not {value!r}; "
                "send the same filters with it, or none, or start again without the cursor.",
                {"parameter": name, "cursor": params.filters.get(name, ""), "given": value},
            )
        if value:
            effective[name] = value
    return effective
