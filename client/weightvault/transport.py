"""HTTP on httpx: one session per Client, error answers raised as typed exceptions, and retries while the
server is not accepting connections yet (a refused connection sent nothing, so retrying is always safe)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx

from weightvault._version import __version__
from weightvault.errors import ConnectionFailed, UnexpectedResponse, api_error

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 60.0
CONNECT_TIMEOUT = 10.0
# Fail fast on a wrong URL; wait for a starting server only when asked (WEIGHTVAULT_CONNECT_RETRY).
DEFAULT_CONNECT_RETRY = 0.0

log = logging.getLogger("weightvault.client")
T = TypeVar("T")


class Transport:
    """An httpx session against one server."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        connect_retry: float = DEFAULT_CONNECT_RETRY,
    ) -> None:
        self.base_url = url.rstrip("/")
        headers = {"User-Agent": f"weightvault-client/{__version__}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.connect_retry = connect_retry
        self.http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT),
            transport=TlsOnFirstUse(),
        )

    def close(self) -> None:
        self.http.close()

    def call(self, send: Callable[[], T]) -> T:
        """Run ``send``; retry it while connections are refused, up to ``connect_retry`` seconds."""
        deadline = time.monotonic() + self.connect_retry
        delay = 0.25
        warned = False
        while True:
            try:
                return send()
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if time.monotonic() + delay > deadline:
                    raise ConnectionFailed(
                        f"Cannot connect to {self.base_url} ({exc}). Is the server running "
                        "(`weightvault serve`)? Point the client elsewhere with --url or WEIGHTVAULT_URL; "
                        "wait for a server that is starting with WEIGHTVAULT_CONNECT_RETRY=SECONDS."
                    ) from exc
                if not warned:
                    log.warning(
                        "cannot connect to %s yet; retrying for %.0fs", self.base_url, self.connect_retry
                    )
                    warned = True
            except httpx.TransportError as exc:
                raise ConnectionFailed(f"The connection to {self.base_url} failed: {exc!r}.") from exc
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request; an error answer raises its typed exception."""
        response = self.call(lambda: self.http.request(method, path, **kwargs))
        check(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """Send a request and return its JSON object."""
        return json_object(self.request(method, path, **kwargs))

    def pages(self, path: str, *, params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Every item of a paginated list, following ``next_cursor``."""
        query = {**(params or {}), "limit": 500}
        while True:
            page = self.json("GET", path, params=query)
            items = page.get("items")
            if not isinstance(items, list):
                raise UnexpectedResponse(f"{path} did not answer a page of items.")
            yield from items
            cursor = page.get("next_cursor")
            if not cursor:
                return
            query["cursor"] = cursor

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed response (status not checked); transport failures while reading are ConnectionFailed."""
        request = self.http.build_request(method, path, **kwargs)
        response = self.call(lambda: self.http.send(request, stream=True))
        try:
            yield response
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"The connection to {self.base_url} broke: {exc!r}.") from exc
        finally:
            response.close()


class TlsOnFirstUse(httpx.BaseTransport):
    """httpx's transport, with its TLS context made on the first ``https`` request instead of up front.

    Loading the CA bundle costs 60-80 ms, a quarter of a CLI command's start-up, and a server on plain HTTP
    (the default) never needs it. Certificates are verified exactly as httpx does by default.
    """

    def __init__(self) -> None:
        # verify=False only skips loading the CA bundle: this transport is never given an https URL.
        self._plain = httpx.HTTPTransport(verify=False)
        self._tls: httpx.HTTPTransport | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme == "http":
            return self._plain.handle_request(request)
        if self._tls is None:
            self._tls = httpx.HTTPTransport()
        return self._tls.handle_request(request)

    def close(self) -> None:
        self._plain.close()
        if self._tls is not None:
            self._tls.close()


def check(response: httpx.Response) -> None:
    """Raise the typed exception for an error answer (reads a streamed body first)."""
    if response.status_code < 400:
        return
    response.read()
    code, message = f"http_{response.status_code}", ""
    details: dict[str, Any] = {}
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict):
        code = str(error.get("code") or code)
        message = str(error.get("message") or "")
        if isinstance(error.get("details"), dict):
            details = error["details"]
    if not message:
        message = f"The server answered {response.status_code} {response.reason_phrase}."
    raise api_error(response.status_code, code, message, details)


def json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise UnexpectedResponse(f"{response.request.url.path} did not answer a JSON object.")
    return data
