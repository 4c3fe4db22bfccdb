"""Artifact download URLs for a whole response from one ``url_for``.

``request.url_for`` walks the app's routes on every call; a page of 50 versions has 150 artifacts. The
route is looked up once per base URL (scheme, host and root path as the client used; a few are kept)
with placeholder parameters and the rest is string work. Names, kinds and formats are ``[a-z0-9._-]``
(``app.api.names``, ``app.artifacts.naming``), which ``url_for`` would not have quoted either, so the URLs
are the same.
"""

from __future__ import annotations

from collections import OrderedDict

from starlette.requests import Request

from app.artifacts.naming import DownloadUrl

_MODEL, _REF, _KIND = "\x00model\x00", "\x00ref\x00", "\x00kind\x00"
# Host headers are the client's to choose: the templates kept are few, the oldest dropped first.
_KEPT = 32
_templates: OrderedDict[tuple[int, str], tuple[str, str, str, str]] = OrderedDict()


def _template(request: Request) -> tuple[str, str, str, str]:
    key = (id(request.app), str(request.base_url))
    found = _templates.get(key)
    if found is None:
        template = str(request.url_for("download_artifact", model=_MODEL, ref=_REF, kind=_KIND))
        head, rest = template.split(_MODEL)
        middle, rest = rest.split(_REF)
        before_kind, tail = rest.split(_KIND)
        found = _templates[key] = (head, middle, before_kind, tail)
        while len(_templates) > _KEPT:
            _templates.popitem(last=False)
    return found


def download_urls(request: Request) -> DownloadUrl:
    """A ``DownloadUrl`` for ``request`` (scheme, host and root path as the client used)."""
    head, middle, before_kind, tail = _template(request)

    def build(*, model: str, version: int, kind: str, fmt: str) -> str:
        return f"{head}{model}{middle}{version}{before_kind}{kind}{tail}?format={fmt}"

    return build
