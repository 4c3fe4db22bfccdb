"""The read cache keeps recent bodies within its byte budget, dropping the least recently used first."""

from __future__ import annotations

from app.api.read_cache import ReadCache


def test_the_least_recently_used_body_goes_first_when_the_budget_is_full() -> None:
    cache = ReadCache(max_bytes=800)
    for key in "abcd":
        cache.put(key, key.encode() * 100)
    assert cache.get("a") == b"a" * 100  # a is now the most recent
    cache.put("e", b"e" * 100)
    cache.put("f", b"f" * 100)
    cache.put("g", b"g" * 100)
    cache.put("h", b"h" * 100)
    cache.put("i", b"i" * 100)
    assert cache.bytes <= 800 and len(cache) == 8
    assert cache.get("b") is None  # the oldest untouched went first
    assert cache.get("a") == b"a" * 100


def test_replacing_a_key_counts_its_bytes_once() -> None:
    cache = ReadCache(max_bytes=8000)
    cache.put("k", b"x" * 500)
    cache.put("k", b"y" * 300)
    assert cache.bytes == 300 and cache.get("k") == b"y" * 300


def test_a_body_over_an_eighth_of_the_budget_is_not_kept_and_zero_keeps_nothing() -> None:
    cache = ReadCache(max_bytes=800)
    cache.put("big", b"z" * 101)
    assert cache.get("big") is None and cache.bytes == 0
    off = ReadCache(max_bytes=0)
    off.put("k", b"v")
    assert off.get("k") is None


def test_the_entry_bound_holds_for_tiny_bodies() -> None:
    cache = ReadCache(max_bytes=1 << 20, max_entries=3)
    for n in range(5):
        cache.put(n, b"v")
    assert len(cache) == 3 and cache.get(0) is None and cache.get(4) == b"v"
