"""Tell what a file is from its first bytes, never from its name."""

from __future__ import annotations

import pickletools
import struct
from pathlib import Path
from typing import Literal

from app.errors import UnreadableCheckpoint, UnsafeCheckpoint

CheckpointFormat = Literal["torch_zip", "torch_legacy", "safetensors"]

# torch's legacy (pre-1.6) format opens with a pickle of this magic number (a LONG1 of 10 bytes),
# framed from protocol 4 on.
_LEGACY_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_FRAME = 0x95
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_SCAN_BYTES = 16 * 1024 * 1024
_PICKLE_STARTS = (b"\x80", b"(", b"c", b"]", b"}", b"I", b"S", b"V", b"N", b"l", b"d")


def detect_format(path: Path) -> CheckpointFormat:
    """Return the format or raise ``UnreadableCheckpoint`` / ``UnsafeCheckpoint`` for anything else."""
    size = path.stat().st_size
    if size == 0:
        raise UnreadableCheckpoint("The upload is empty; send the bytes of a file written by torch.save.")
    with path.open("rb") as handle:
        head = handle.read(32)
    if head.startswith(_ZIP_MAGIC):
        return "torch_zip"
    if _is_legacy(head):
        return "torch_legacy"
    if len(head) >= 9 and head[8:9] == b"{":
        (header_len,) = struct.unpack("<Q", head[:8])
        if header_len <= size - 8:
            return "safetensors"
        raise UnreadableCheckpoint(
            "The file looks like safetensors but its header length points past the end of the file "
            "(truncated or corrupt)."
        )
    if head.startswith(b"PK"):
        raise UnreadableCheckpoint(
            "The file is a zip archive but not one torch.save wrote (no local header)."
        )
    if head.startswith(_PICKLE_STARTS):
        _refuse_bare_pickle(path)
    raise UnreadableCheckpoint(
        "The file is not a PyTorch checkpoint (torch.save zip or legacy format) nor a safetensors file."
    )


def _is_legacy(head: bytes) -> bool:
    if len(head) < 2 or head[0] != 0x80 or head[1] not in (2, 3, 4, 5):
        return False
    body = head[2:]
    if body[:1] == bytes([_FRAME]):
        body = body[9:]
    return body.startswith(_LEGACY_MAGIC)


def scan_pickle_globals(data: bytes) -> set[str]:
    """Names of every global a pickle would import, found by parsing opcodes only (nothing runs)."""
    found: set[str] = set()
    recent_strings: list[str] = []
    for opcode, arg, _pos in pickletools.genops(data):
        if opcode.name in ("GLOBAL", "INST") and isinstance(arg, str):
            found.add(arg.replace(" ", "."))
        elif opcode.name == "STACK_GLOBAL" and len(recent_strings) >= 2:
            found.add(f"{recent_strings[-2]}.{recent_strings[-1]}")
        if isinstance(arg, str) and ("UNICODE" in opcode.name or "STRING" in opcode.name):
            recent_strings.append(str(arg))
    return found


def _refuse_bare_pickle(path: Path) -> None:
    with path.open("rb") as handle:
        data = handle.read(_PICKLE_SCAN_BYTES)
    try:
        names = scan_pickle_globals(data)
    except Exception:
        names = set()
    if names:
        raise UnsafeCheckpoint(
            f"The file is a bare pickle that imports {', '.join(sorted(names))}; it was not run. "
            "Upload a file written by torch.save(model.state_dict(), f) or a safetensors file.",
            {"globals": sorted(names)},
        )
    raise UnreadableCheckpoint(
        "The file is a bare pickle, not a PyTorch checkpoint; write it with torch.save(model.state_dict(), f)."
    )
