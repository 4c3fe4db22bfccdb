"""Response field types for values stored from outside: they serialise whatever a row holds.

A lone surrogate (``"\\ud800"``) cannot be encoded as UTF-8, so a JSON response holding one would fail
and turn every later read of that row into a 500. Uploads and edits refuse such strings before they are
stored; these types cover what was stored before that rule or by hand, replacing the unencodable code
point with U+FFFD. The app keeps FastAPI's default response class, whose serialisation runs in
pydantic's Rust core (several times faster for long lists than ``json.dumps``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import SerializationInfo, SerializerFunctionWrapHandler, WrapSerializer

# A Python str holds code points: a surrogate in one is always a lone (unencodable) one.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _text(value: str) -> str:
    if value.isascii():
        return value
    return _SURROGATE.sub("\ufffd", value)


def clean(value: Any) -> Any:
    """``value`` with every string UTF-8 encodable."""
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, dict):
        return {clean(key): clean(item) for key, item in value.items()}
    if isinstance(value, list):
        return [clean(item) for item in value]
    return value


# Serialisation context saying the caller retries without it if the output cannot be encoded (as
# ``app.api.fast_reads`` does): values go out as they are, with no walk through every string of them.
AS_STORED: dict[str, bool] = {"weightvault_as_stored": True}


def _serialize(value: Any, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
    if info.context is AS_STORED:
        return handler(value)
    return handler(clean(value))


StoredJson = Annotated[dict[str, Any], WrapSerializer(_serialize, when_used="json")]
StoredText = Annotated[str, WrapSerializer(_serialize, when_used="json")]
