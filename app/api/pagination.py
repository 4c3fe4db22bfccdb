"""Keyset pagination: ``?limit=&cursor=`` in, ``{"items", "next_cursor"}`` out."""

from __future__ import annotations

import base64
import json
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


def encode_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": value}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Any:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        after = json.loads(base64.urlsafe_b64decode(padded.encode()))["after"]
    except (ValueError, KeyError, TypeError, RecursionError):
        after = None
    # Cursors carry a version number, a job sequence number or a name; anything else was not ours.
    valid_int = isinstance(after, int) and not isinstance(after, bool) and 0 <= after < 2**62
    valid_str = isinstance(after, str) and len(after) <= 256
    if not (valid_int or valid_str):
        raise InvalidCursor(
            "The cursor is not one this server gave out; pass next_cursor from the previous page unchanged."
        )
    return after


def page_params(
    request: Request,
    limit: Annotated[
        int, Query(ge=1, description="Page size; larger values are capped (500 by default).")
    ] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> PageParams:
    cap = (
        request.app.state.runtime.settings.max_page_size
        if hasattr(request.app.state, "runtime")
        else MAX_LIMIT
    )
    return PageParams(limit=min(limit, cap), after=decode_cursor(cursor) if cursor else None)


def page_of(rows: list[T], params: PageParams, key: Any) -> tuple[list[T], str | None]:
    """Split a ``limit + 1`` fetch into the page and the cursor of the next one."""
    if len(rows) > params.limit:
        rows = rows[: params.limit]
        return rows, encode_cursor(key(rows[-1]))
    return rows, None
