"""The read cache keeps recent bodies within its byte budget, dropping the least recently used first."""

from __future__ import annotations

from app.api.read_cache import ReadCache


def test_the_least_recently_used_body_goes_first_when_the_budget_is_full() -> None:
    # Each entry costs its body and its key's text: 97 + len("'a'") = 100 bytes, so ten fit.
    cache = ReadCache(max_bytes=1000)
    for key in "abcdefghij":
        cache.put(key, key.encode() * 97)
    assert cache.bytes == 1000 and len(cache) == 10
    assert cache.get("a") == b"a" * 97  # a is now the most recent
    cache.put("k", b"k" * 97)
    cache.put("l", b"l" * 97)
    assert cache.bytes == 1000 and len(cache) == 10
    assert cache.get("b") is None and cache.get("c") is None  # the oldest untouched went first
    assert cache.get("a") == b"a" * 97 and cache.get("l") == b"l" * 97


def test_replacing_a_key_counts_its_bytes_once() -> None:
    cache = ReadCache(max_bytes=8000)
    cache.put("k", b"x" * 500)
    cache.put("k", b"y" * 300)
    assert cache.bytes == 300 + len("'k'") and cache.get("k") == b"y" * 300


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


def test_long_keys_count_against_the_budget() -> None:
    # A cursor or Host header of the client's choosing cannot grow the cache past its budget.
    cache = ReadCache(max_bytes=64_000)
    for n in range(1000):
        cache.put(("/v1/models/{model}/versions", "m", n, "c" * 4000), b"{}")
    assert cache.bytes <= 64_000 and len(cache) < 20
