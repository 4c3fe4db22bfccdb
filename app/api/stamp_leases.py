"""Read stamps an API process may reuse for a few milliseconds without asking the database again.

A kept read (``app.api.read_cache``) still costs one statement: the stamp that says whether the kept body
is current. On PostgreSQL that statement is most of a kept read's cost (a round trip to another process,
and psycopg's async machinery around it). A stamp read at time ``s`` is reused until ``s + lease``, and
in exchange every answer the database gave through FastAPI, writes and their errors included, is held
back until ``lease`` has passed since it was ready (``app.api.commit_wait``), the way Spanner waits out
its clock uncertainty before acknowledging a commit.

Why that is enough: a write committed at ``c`` is answered at ``a >= c + lease``. A read that arrives
after the answer, at ``r > a``, in any process on any host, reuses a stamp only if it was read at
``s > r - lease > a - lease >= c``: the statement that read it started after the commit and saw it. The
same holds for anything a client learned from an answer FastAPI gave (a job reported finished, a download
found), since those wait too.

What a lease lets through: a change nobody has been answered about yet (a write still in flight, a
conversion worker's commit, hand-written SQL) reaches each API process up to ``lease`` later, and until
then two processes may disagree: one that read its stamp afresh shows the change, one still on its lease
does not, so a client polling both may see a value and then, for at most the lease, the one before it.
The hot reads are not held back to prevent that: holding each until its stamp's lease has passed would
cost every read up to the lease, which is the very cost the lease removes. Every API process must run
with the same lease: a process that answers writes after a shorter wait than another's lease lets that
other process serve what the write changed.

``r`` is when the read reached the app, not when it is answered: under load a read may wait in the event
loop's queue for longer than the lease, and its own arrival is all the argument needs. When a lease runs
out, every read of that key would ask again (32 clients: up to 32 statements queued on a handful of
connections). A read that finds a read of the same key begun after ``r - lease`` still under way waits for
it instead (``pending``) and takes its stamp, however long it took to come back.

The times are ``time.monotonic()``, the clock the event loop's sleeps use.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Hashable
from typing import Any

# Past this many keys, expired leases are dropped before a new one is added (each key is a model that
# exists, or the models list: an unbounded map only if the registry is).
_PRUNE_ABOVE = 4096


class StampLeases:
    """Per API process: the last stamp read for each key, and when its statement was sent."""

    def __init__(self, lease_seconds: float) -> None:
        self.lease_seconds = lease_seconds
        self._stamps: dict[Hashable, tuple[Any, float]] = {}
        self._lock = threading.Lock()  # without a loop connection, reads record from the thread pool
        # Reads under way on the event loop, by key: set when the read is done, and when it began.
        self._pending: dict[Hashable, tuple[asyncio.Event, float]] = {}

    def current(self, key: Hashable, arrived: float) -> Any | None:
        """The stamp for ``key`` read less than the lease before a read that ``arrived``, or None."""
        held = self._stamps.get(key)
        if held is None or arrived - held[1] >= self.lease_seconds:
            return None
        return held[0]

    def record(self, key: Hashable, stamp: Any, asked_at: float) -> None:
        """Keep ``stamp``, read by a statement sent at ``asked_at`` (taken before sending it)."""
        if not self.lease_seconds:
            return
        with self._lock:
            if len(self._stamps) >= _PRUNE_ABOVE and key not in self._stamps:
                oldest = time.monotonic() - self.lease_seconds
                self._stamps = {k: held for k, held in self._stamps.items() if held[1] > oldest}
            held = self._stamps.get(key)
            if held is None or held[1] <= asked_at:  # a slower, older read never replaces a newer one
                self._stamps[key] = (stamp, asked_at)

    def pending(self, key: Hashable, arrived: float) -> asyncio.Event | None:
        """A read of ``key`` begun less than the lease before a read that ``arrived``, not done yet: wait
        for it, then look again (``current`` with the same ``arrived``)."""
        under_way = self._pending.get(key)
        if under_way is None or arrived - under_way[1] >= self.lease_seconds:
            return None
        return under_way[0]

    def begin(self, key: Hashable) -> asyncio.Event:
        """A read of ``key`` begins on the event loop; ``end`` it whatever happens."""
        done = asyncio.Event()
        self._pending[key] = (done, time.monotonic())
        return done

    def end(self, key: Hashable, done: asyncio.Event) -> None:
        done.set()
        under_way = self._pending.get(key)
        if under_way is not None and under_way[0] is done:
            del self._pending[key]
