"""The hot GETs answered without FastAPI's routing, dependency solving and response re-validation.

CI systems, deploy scripts and dashboards poll a registry: ``GET /v1/models``, ``/v1/models/{m}``,
``.../versions`` and ``.../versions/{ref}`` are most of its traffic. Through FastAPI each crossed the
included routers' matching, the app-wide and route dependencies, two thread-pool hops (the sync endpoint,
then the validation of what it returned) and a second validation of a response model the service had just
built. This ASGI middleware matches those four paths itself and calls the very functions the routes call
(``model_record``, ``model_page``, ``version_record``, ``version_page``), so the body is the same.

It answers only the plain case: a GET without a body, by a caller allowed to read (auth off, or a valid
token: one indexed statement, nothing cached, so a revoked token is refused by the very next request), with
query parameters it can parse exactly as the route would (each given once, digits for ``limit``).
Anything else, and any error (a missing model, a bad cursor, a refused token), goes on to FastAPI
unchanged, which answers it as it always did: the error bodies, the 422s and the auth refusals have one
implementation. A read that fails here is read again there.

SQLite reads run on the event loop, on a connection of the loop's own (``Runtime.read_engine``): a read
by key or one page takes a few hundred microseconds, no writer can block it (WAL readers never wait for
writers; its busy timeout is 50 ms, after which FastAPI answers), and the hand-off to the thread pool
cost more than the read. PostgreSQL reads run on the loop too (``app.db.loop_reads``): the same functions
in a greenlet, each statement awaited on an async connection, so the loop serves others while the server
answers; a dead connection fails the read, which FastAPI then answers on the main, pre-pinged pool. On
both, a body built on a cache miss (a page of 50: about 3 ms) is built on the loop.

Every body answered here is kept (``app.api.read_cache``) under a stamp the database changes with what
the body shows: a model's record, versions and pages of versions under its id, created_at and the
revision triggers bump on every change to its row, versions, artifacts and aliases; a page of models
(searches included) under the models list's counter, which any models row change bumps. A repeated read
costs one statement by a unique key; the first read after a write builds the body again. A stamp read
less than ``read_lease_ms`` ago is reused without a statement (``app.api.stamp_leases``): a kept body is
then answered without touching the database, and ``app.api.commit_wait`` holds back every other API
answer for as long, so no read is older than a write already answered (what a lease still lets
through is said there).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from pydantic import TypeAdapter
from pydantic_core import PydanticSerializationError
from sqlalchemy import Engine
from starlette._utils import get_route_path
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.commit_wait import CommitWait
from app.api.pagination import Page, make_page_params
from app.api.read_cache import ReadCache
from app.api.responses import AS_STORED
from app.api.stamp_leases import StampLeases
from app.artifacts.urls import download_urls
from app.auth.service import allows
from app.db.engine import read_connection
from app.db.raw_reads import DriverReads, ReadConnection
from app.db.revisions import model_list_stamp, revision_triggers_present
from app.models.router import model_page, model_record
from app.models.schemas import ModelRead
from app.ops.logs import request_id_var
from app.ops.middleware import finish_request, incoming_request_id
from app.runtime import Runtime
from app.versions.router import version_page, version_record
from app.versions.schemas import VersionRead
from app.versions.service import read_model_stamp

log = logging.getLogger("weightvault.reads")

# app.state attribute: False turns the fast path off (tests compare it with FastAPI's answers).
ENABLED_ATTR = "fast_reads"

_SEGMENT = "[^/]+"
_MODEL = re.compile(f"/v1/models/({_SEGMENT})")
_VERSIONS = re.compile(f"/v1/models/({_SEGMENT})/versions")
_VERSION = re.compile(f"/v1/models/({_SEGMENT})/versions/({_SEGMENT})")
_LIMIT = re.compile("[1-9][0-9]{0,8}")
# The routes' declared bounds (app.deps ModelName/Ref, app.models.router, app.api.pagination).
_MAX_PATH_PARAM = 1024
_MAX_FILTER = 128
_MAX_CURSOR = 4096


@dataclass(frozen=True)
class ReadRoute:
    """A read answered here: its route's template, as the metrics label it."""

    path: str


_MODEL_ROUTE = ReadRoute("/v1/models/{model}")
_MODELS_ROUTE = ReadRoute("/v1/models")
_VERSIONS_ROUTE = ReadRoute("/v1/models/{model}/versions")
_VERSION_ROUTE = ReadRoute("/v1/models/{model}/versions/{ref}")

# FastAPI serialises a response through a TypeAdapter of the route's return annotation; so do we.
_MODEL_JSON = TypeAdapter(ModelRead)
_MODELS_JSON = TypeAdapter(Page[ModelRead])
_VERSION_JSON = TypeAdapter(VersionRead)
_VERSIONS_JSON = TypeAdapter(Page[VersionRead])


class _NotHere(Exception):
    """The request is not one this path answers as FastAPI would: FastAPI takes it."""


@dataclass(frozen=True)
class Answer:
    """How to answer a matched read: ``read`` the value, serialised by ``adapter``. The body is kept in
    the read cache under a stamp and ``request_key`` (what else it depends on: the ref, the page
    parameters, the base URL of download links): with ``model``, that model's stamp; without, the models
    list's counter."""

    route: ReadRoute
    read: Callable[[ReadConnection], Any]
    adapter: TypeAdapter[Any]
    request_key: tuple[Any, ...]
    model: str | None = None


def _query(scope: Scope, allowed: frozenset[str]) -> dict[str, str]:
    raw: bytes = scope.get("query_string", b"")
    if not raw:
        return {}
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    found = dict(pairs)
    if len(found) != len(pairs) or not found.keys() <= allowed:
        raise _NotHere
    return found


def _limit(query: dict[str, str], cap: int) -> tuple[int, str | None]:
    text = query.get("limit")
    if text is not None and not _LIMIT.fullmatch(text):
        raise _NotHere
    cursor = query.get("cursor")
    if cursor is not None and len(cursor) > _MAX_CURSOR:
        raise _NotHere
    return (50 if text is None else int(text)), cursor


def _filter(query: dict[str, str], name: str) -> str | None:
    value = query.get(name)
    if value is not None and len(value) > _MAX_FILTER:
        raise _NotHere
    return value


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _serialised(value: Any, adapter: TypeAdapter[Any]) -> bytes:
    try:
        return adapter.dump_json(value, by_alias=True, context=AS_STORED)
    except PydanticSerializationError:  # a lone surrogate stored long ago: clean the strings
        return adapter.dump_json(value, by_alias=True)


def _cache_key(answer: Answer, stamp: Any) -> tuple[Any, ...]:
    return (answer.route.path, answer.model, stamp, answer.request_key)


def _leased_body(answer: Answer, cache: ReadCache, leases: StampLeases, arrived: float) -> bytes | None:
    """The kept body under a stamp read less than the lease before the read arrived: no statement at all."""
    stamp = leases.current(answer.model, arrived)
    return None if stamp is None else cache.get(_cache_key(answer, stamp))


def _body(answer: Answer, cache: ReadCache, leases: StampLeases) -> Callable[[ReadConnection], bytes]:
    """The response body on a connection: from the cache while its stamp is unchanged."""
    model = answer.model
    if not cache.max_bytes:  # nothing is kept (or may be: see _cache_of): no stamp to read
        return lambda conn: _serialised(answer.read(conn), answer.adapter)

    def cached(conn: ReadConnection) -> bytes:
        # The stamp is read first: the rows read after it are at least as new, so a body is never kept
        # under a newer stamp than the rows it was built from.
        asked_at = time.monotonic()  # before the statement is sent: the lease counts from here
        stamp: Any = model_list_stamp(conn) if model is None else read_model_stamp(conn=conn, model=model)
        if stamp is None:
            raise _NotHere  # no such model: FastAPI answers the 404
        leases.record(model, stamp, asked_at)
        key = _cache_key(answer, stamp)
        body = cache.get(key)
        if body is None:
            body = _serialised(answer.read(conn), answer.adapter)
            cache.put(key, body)
        return body

    return cached


def _guarded(
    read: Callable[[ReadConnection], Any], authorization: str | None
) -> Callable[[ReadConnection], Any]:
    """``read`` behind the ``read`` scope's check; FastAPI answers a refusal (401 or 403, its message)."""

    def guarded(conn: ReadConnection) -> Any:
        if not allows(conn=conn, authorization=authorization, needed="read"):
            raise _NotHere
        return read(conn)

    return guarded


def _on_a_connection(engine: Engine, read: Callable[[ReadConnection], Any]) -> Any:
    with read_connection(engine) as conn:
        return read(DriverReads(conn))


async def _read(runtime: Runtime, read: Callable[[ReadConnection], bytes]) -> bytes:
    """``read`` on a connection: SQLite's on the loop, PostgreSQL's awaited on the loop, or a thread's."""
    if runtime.reads_on_loop:
        body: bytes = runtime.loop_reads.run(read)
    elif runtime.postgres_loop_reads is not None:
        body = await runtime.postgres_loop_reads.run(read)
    else:
        body = await run_in_threadpool(_on_a_connection, runtime.read_engine, read)
    return body


class FastReads:
    """ASGI middleware answering the four hot GETs in their plain case (see the module docstring).

    The outermost layer (``install``): what it answers skips FastAPI's own wrappers (error, telemetry and
    body-limit middleware) and ``RequestContextMiddleware``, so it does that middleware's part itself: the
    request id header, the metrics and the access log line, through the same functions.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._cache: ReadCache | None = None
        self._leases = StampLeases(0.0)
        self._cache_runtime: Runtime | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            started, arrived = time.perf_counter(), time.monotonic()
            answer = self._match(scope)
            if answer is not None:
                try:
                    cache = self._cache_of(scope["app"].state.runtime)
                    body = await self._run(scope, answer, cache, self._leases, arrived)
                except Exception:
                    body = None  # FastAPI reads it again and answers as it always does
                if body is not None:
                    await _respond(scope, send, answer.route, body, started)
                    return
        await self.app(scope, receive, send)

    def _cache_of(self, runtime: Runtime) -> ReadCache:
        if self._cache is None or self._cache_runtime is not runtime:
            budget = runtime.settings.read_cache_bytes
            if budget and not revision_triggers_present(runtime.engine):
                log.warning("the database lacks the triggers that keep models.revision: no reads are kept")
                budget = 0
            self._cache = ReadCache(budget)
            self._leases = StampLeases(runtime.settings.read_lease_ms / 1000 if budget else 0.0)
            self._cache_runtime = runtime
        return self._cache

    @staticmethod
    async def _run(
        scope: Scope, answer: Answer, cache: ReadCache, leases: StampLeases, arrived: float
    ) -> bytes:
        runtime: Runtime = scope["app"].state.runtime
        if runtime.settings.auth_enabled:
            # The token is checked on every read (a revoked one is refused by the next): the stamp is
            # read on the same connection, lease or not.
            return await _read(
                runtime, _guarded(_body(answer, cache, leases), _header(scope, b"authorization"))
            )
        leased = _leased_body(answer, cache, leases, arrived)
        if leased is not None:
            return leased
        if runtime.reads_on_loop:  # SQLite: a read runs to its end before another begins
            return await _read(runtime, _body(answer, cache, leases))
        under_way = leases.pending(answer.model, arrived)
        if under_way is not None:
            await under_way.wait()
            leased = _leased_body(answer, cache, leases, arrived)
            if leased is not None:
                return leased
        done = leases.begin(answer.model)
        try:
            return await _read(runtime, _body(answer, cache, leases))
        finally:
            leases.end(answer.model, done)

    def _match(self, scope: Scope) -> Answer | None:
        state = scope["app"].state
        runtime: Runtime | None = getattr(state, "runtime", None)
        if runtime is None or not getattr(state, ENABLED_ATTR, True):
            return None
        path = get_route_path(scope)
        if not path.startswith("/v1/models") or _has_body(scope):
            return None
        try:
            return self._read_for(scope, path, runtime)
        except _NotHere:
            return None
        except Exception:
            # Anything odd about the request (a Host that is no URL, say) is FastAPI's to answer, with
            # its error handling, request id and access line: nothing escapes this outermost layer.
            return None

    @staticmethod
    def _read_for(scope: Scope, path: str, runtime: Runtime) -> Answer | None:
        cap = runtime.settings.max_page_size
        if path == "/v1/models":
            query = _query(scope, frozenset({"limit", "cursor", "q", "architecture"}))
            limit, cursor = _limit(query, cap)
            q, architecture = _filter(query, "q"), _filter(query, "architecture")

            def models(conn: ReadConnection) -> Any:
                page = make_page_params(limit=limit, cursor=cursor, cap=cap)
                return model_page(conn=conn, page=page, q=q, architecture=architecture)

            return Answer(_MODELS_ROUTE, models, _MODELS_JSON, (limit, cursor, q, architecture))
        if (found := _MODEL.fullmatch(path)) is not None:
            (model,) = found.groups()
            if len(model) > _MAX_PATH_PARAM or scope.get("query_string"):
                return None
            return Answer(
                _MODEL_ROUTE, lambda conn: model_record(conn=conn, model=model), _MODEL_JSON, (), model=model
            )
        if (found := _VERSION.fullmatch(path)) is not None:
            model, ref = found.groups()
            if len(model) > _MAX_PATH_PARAM or len(ref) > _MAX_PATH_PARAM or scope.get("query_string"):
                return None
            request = Request(scope)
            url = download_urls(request)
            return Answer(
                _VERSION_ROUTE,
                lambda conn: version_record(conn=conn, url=url, model=model, ref=ref),
                _VERSION_JSON,
                (ref, str(request.base_url)),
                model=model,
            )
        if (found := _VERSIONS.fullmatch(path)) is not None:
            (model,) = found.groups()
            if len(model) > _MAX_PATH_PARAM:
                return None
            query = _query(scope, frozenset({"limit", "cursor", "order"}))
            limit, cursor = _limit(query, cap)
            order = query.get("order")
            if order not in (None, "asc", "desc"):
                return None
            request = Request(scope)
            url = download_urls(request)

            def versions(conn: ReadConnection) -> Any:
                page = make_page_params(limit=limit, cursor=cursor, cap=cap)
                return version_page(conn=conn, url=url, model=model, page=page, order=order)

            return Answer(
                _VERSIONS_ROUTE,
                versions,
                _VERSIONS_JSON,
                (limit, cursor, order, str(request.base_url)),
                model=model,
            )
        return None


async def _respond(scope: Scope, send: Send, route: ReadRoute, body: bytes, started: float) -> None:
    request_id = incoming_request_id(scope["headers"])
    token = request_id_var.set(request_id)
    try:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", b"application/json"),
                    (b"x-request-id", request_id.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
    finally:
        finish_request(scope, route=route.path, status=200, started=started, received=0, sent=len(body))
        request_id_var.reset(token)


def install(app: Starlette, *, lease_seconds: float) -> None:
    """Put ``FastReads`` in front of the app's whole middleware stack, FastAPI's own layers included
    (``add_middleware`` can only place it inside them), and ``CommitWait`` right behind it: whatever
    FastAPI answers waits out the read lease, error answers included."""
    build = app.build_middleware_stack

    def build_behind_fast_reads() -> ASGIApp:
        return FastReads(CommitWait(build(), lease_seconds))

    app.build_middleware_stack = build_behind_fast_reads  # type: ignore[method-assign]
