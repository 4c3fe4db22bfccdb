"""The tus 1.0 headers: what this server speaks, and parsing what clients send (pure functions)."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from email.utils import format_datetime

from app.uploads.errors import InvalidUploadRequest, UnsupportedTusVersion

VERSION = "1.0.0"
EXTENSIONS = "creation,termination,expiration,checksum"
# Per-PATCH integrity checks; sha1 is tuspy's and tus-js-client's default, sha256 the contract's.
CHECKSUM_DIGEST_SIZES = {"sha256": 32, "sha1": 20}
CHECKSUM_ALGORITHMS = ",".join(CHECKSUM_DIGEST_SIZES)
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
_KEY = re.compile(r"^[!-+\--~]+$")  # printable ASCII without space and comma
_MAX_METADATA_HEADER = 64 * 1024


def check_version(header: str | None) -> None:
    if header != VERSION:
        raise UnsupportedTusVersion(
            f"Send 'Tus-Resumable: {VERSION}'; this server speaks tus {VERSION} only.",
            {"tus_version": VERSION},
        )


def non_negative(header: str | None, name: str) -> int:
    if header is None or not header.isdigit() or len(header) > 19:
        raise InvalidUploadRequest(f"The {name} header must be a non-negative integer.", {"header": name})
    return int(header)


def parse_metadata(header: str | None) -> dict[str, str]:
    """``Upload-Metadata``: comma-separated ``key base64value`` pairs (the value may be absent)."""
    if not header:
        return {}
    if len(header) > _MAX_METADATA_HEADER:
        raise InvalidUploadRequest("The Upload-Metadata header is too long.")
    pairs: dict[str, str] = {}
    for item in header.split(","):
        key, _, encoded = item.strip().partition(" ")
        if not _KEY.match(key) or key in pairs:
            raise InvalidUploadRequest(f"Upload-Metadata has an invalid or repeated key {key[:40]!r}.")
        try:
            pairs[key] = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidUploadRequest(
                f"Upload-Metadata's value for {key!r} is not base64 of UTF-8 text."
            ) from None
    return pairs


def parse_checksum(header: str | None) -> tuple[str, bytes] | None:
    """``Upload-Checksum: <algorithm> <base64 digest>`` for the bytes of one PATCH."""
    if header is None:
        return None
    algorithm, _, encoded = header.strip().partition(" ")
    algorithm = algorithm.lower()
    size = CHECKSUM_DIGEST_SIZES.get(algorithm)
    if size is None:
        raise InvalidUploadRequest(
            f"Upload-Checksum algorithm {algorithm[:20]!r} is not supported; use one of {CHECKSUM_ALGORITHMS}.",
            {"supported": list(CHECKSUM_DIGEST_SIZES)},
        )
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        digest = b""
    if len(digest) != size:
        raise InvalidUploadRequest(
            f"Upload-Checksum's {algorithm} digest must be {size} bytes, base64-encoded."
        )
    return algorithm, digest


def http_date(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True)
