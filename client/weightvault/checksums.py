"""How a download is checked: against the server's CRC-32 (``X-Weightvault-Crc32``) or its sha256 (ETag).

The CRC is the default: with ISA-L (the ``isal`` package) it runs at about 38 GiB/s on one core, against
about 1 GiB/s for sha256, so on a two-core machine the check no longer competes with receiving and
writing for the CPU. It catches every error burst up to 32 bits and all but one in 4 billion other
corruptions: it guards against damage, not against a server that lies (anyone can forge a CRC). So a
file checked only by a CRC keeps its sha256 name on its server's word: the cache lets it answer only that
server's CRC-checked pulls (``Cache.usable_blob``), and a resumed download (whose kept part may come
from another server) is checked by its sha256. ``verify="sha256"`` never trusts a file that only a CRC
checked, cached or not, and is what is checked when the server sends no CRC (artifacts stored before it
recorded one); use it when the sha256 must be proven, e.g. to compare with one published elsewhere.
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal, Protocol

import httpx

try:
    from isal.isal_zlib import crc32
except ImportError:  # no isal wheel for this machine: zlib's CRC-32, slower but still twice sha256's speed
    from zlib import crc32

Verify = Literal["crc32", "sha256"]
VERIFY_CHOICES: tuple[Verify, ...] = ("crc32", "sha256")
CRC32_HEADER = "x-weightvault-crc32"
_CRC32 = re.compile(r"^[0-9a-f]{8}$")


class Checksum(Protocol):
    """What a download is fed through: hashlib's interface, which both checks share."""

    @property
    def name(self) -> str: ...

    def update(self, data: bytes | memoryview, /) -> None: ...

    def hexdigest(self) -> str: ...


class Crc32:
    """zlib's CRC-32 with hashlib's interface; ``hexdigest`` is the 8 hex digits the server sends."""

    def __init__(self) -> None:
        self._value = 0

    @property
    def name(self) -> str:
        return "crc32"

    def update(self, data: bytes | memoryview, /) -> None:
        self._value = crc32(data, self._value)

    def hexdigest(self) -> str:
        return f"{self._value:08x}"


def checked_verify(verify: str) -> Verify:
    """``verify`` if it names a check, else a ValueError that lists the choices."""
    if verify not in VERIFY_CHOICES:
        raise ValueError(f"verify must be one of {', '.join(VERIFY_CHOICES)}, not {verify!r}")
    return verify


def checksum_for(response: httpx.Response, *, verify: Verify, sha256: str) -> tuple[Checksum, str]:
    """The checksum to feed this response's body through, and the value it must end with."""
    checked_verify(verify)
    announced = response.headers.get(CRC32_HEADER, "").strip().lower()
    if verify == "crc32" and _CRC32.fullmatch(announced):
        return Crc32(), announced
    return hashlib.sha256(), sha256
