"""Hash several composed files at once: the sha256 (ETag) of each download, computed side by side.

An ingest composes three files over the same tensor blobs, and each needs the sha256 of its whole
composed bytes: three passes over every tensor. Here each file is hashed in its own thread (reads and
hashlib both release the GIL on large buffers), so the passes use every core the machine has. They read
the blob files with ``pread`` into a small buffer: measured, that costs less CPU than hashing the
upload's memory map directly.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from app.storage.composed import BlobPaths, Piece, Recipe

Key = TypeVar("Key", bound=Hashable)


def build_recipes(drafts: Mapping[Key, Iterable[Piece]], blobs: BlobPaths) -> dict[Key, Recipe]:
    """``Recipe.build`` of each draft, in parallel threads; the blobs must be on disk."""
    if not drafts:
        return {}
    with ThreadPoolExecutor(max_workers=len(drafts), thread_name_prefix="recipe-hash") as pool:
        futures = {key: pool.submit(Recipe.build, pieces, blobs) for key, pieces in drafts.items()}
        return {key: future.result() for key, future in futures.items()}
