"""The bodies of recent version reads and pages, kept per API process, keyed by the model's revision.

A page of 50 versions is about 120 kB of JSON built from 200 rows: parsing the stored JSON columns,
validating 50 ``VersionRead`` models and serialising them costs milliseconds, where reading the model's
row by its unique name costs a few microseconds. Every change to a model's versions, artifacts or
aliases bumps ``models.revision`` in the writing transaction (database triggers, migration 0010), so a
body kept under (model id, model created_at, revision, request) is what a fresh read would build, in any
API process, for as long as that revision is current; the next read after a write has answered reads a
new revision and misses. The model's created_at is in the key because SQLite may hand a deleted model's
id to the next one created.

Bounded by bytes (the least recently used bodies go first), counting each key's text as well as its
body (a key holds a cursor, a ref and the base URL, which the client chooses), and by entries; a body
larger than an eighth of the budget is not kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable


class ReadCache:
    """A least-recently-used map of keys to response bodies, at most ``max_bytes`` of bodies in all."""

    def __init__(self, max_bytes: int, max_entries: int = 100_000) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.bytes = 0
        self._bodies: OrderedDict[Hashable, tuple[bytes, int]] = OrderedDict()
        self._lock = threading.Lock()  # PostgreSQL reads run in the thread pool

    def __len__(self) -> int:
        return len(self._bodies)

    def get(self, key: Hashable) -> bytes | None:
        with self._lock:
            kept = self._bodies.get(key)
            if kept is None:
                return None
            self._bodies.move_to_end(key)
            return kept[0]

    def put(self, key: Hashable, body: bytes) -> None:
        cost = len(body) + len(repr(key))
        if cost > self.max_bytes // 8:
            return
        with self._lock:
            old = self._bodies.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            self._bodies[key] = (body, cost)
            self.bytes += cost
            while self.bytes > self.max_bytes or len(self._bodies) > self.max_entries:
                _, (_, dropped) = self._bodies.popitem(last=False)
                self.bytes -= dropped
