"""The rule that keeps leased reads fresh: a stamp serves only reads that arrived less than the lease after
its statement was sent, and a read under way is shared only with reads it could have served."""

from __future__ import annotations

import asyncio
import time

from app.api.stamp_leases import StampLeases


def test_a_stamp_serves_reads_that_arrive_within_the_lease_of_its_statement() -> None:
    # Times a float holds exactly: the boundary is tested as it is, not as rounding leaves it.
    leases = StampLeases(0.5)
    asked_at = 1024.0
    leases.record("demo", (1, "t", 7), asked_at)
    assert leases.current("demo", asked_at + 0.375) == (1, "t", 7)
    assert leases.current("demo", asked_at + 0.5) is None  # a write answered by now may be newer
    assert leases.current("other", asked_at) is None
    # A read that came back late but was sent earlier never replaces a newer stamp.
    leases.record("demo", (1, "t", 6), asked_at - 0.25)
    assert leases.current("demo", asked_at) == (1, "t", 7)
    leases.record("demo", (1, "t", 8), asked_at + 0.25)
    assert leases.current("demo", asked_at + 0.625) == (1, "t", 8)


def test_no_lease_keeps_nothing() -> None:
    leases = StampLeases(0.0)
    now = time.monotonic()
    leases.record("demo", 1, now)
    assert leases.current("demo", now) is None
    done = leases.begin("demo")
    assert leases.pending("demo", time.monotonic()) is None
    leases.end("demo", done)


def test_a_read_under_way_is_shared_only_with_reads_it_can_serve() -> None:
    async def scenario() -> None:
        leases = StampLeases(60.0)
        done = leases.begin("demo")
        began = time.monotonic()
        assert leases.pending("demo", began + 1.0) is done
        assert leases.pending("demo", began + 61.0) is None  # began too long before this read arrived
        assert leases.pending("other", began) is None
        waiter = asyncio.ensure_future(done.wait())
        leases.record("demo", 3, began)
        leases.end("demo", done)
        await asyncio.wait_for(waiter, 1)
        assert leases.pending("demo", began) is None
        assert leases.current("demo", began + 1.0) == 3

    asyncio.run(scenario())


def test_expired_keys_are_pruned_past_the_bound() -> None:
    leases = StampLeases(0.001)
    long_ago = time.monotonic() - 1
    for index in range(5000):
        leases.record(f"m{index}", index, long_ago)
    assert len(leases._stamps) <= 4096 + 1
