"""How many API processes ``serve`` runs when not told."""

from __future__ import annotations

import pytest

from app import settings
from app.settings import MAX_DEFAULT_API_WORKERS, Settings, default_api_workers


@pytest.mark.parametrize(("cores", "expected"), [(1, 1), (2, 2), (6, 6), (64, MAX_DEFAULT_API_WORKERS)])
def test_one_api_process_per_usable_core_at_most_eight(
    monkeypatch: pytest.MonkeyPatch, cores: int, expected: int
) -> None:
    monkeypatch.setattr(settings.os, "sched_getaffinity", lambda _pid: set(range(cores)))
    assert default_api_workers() == expected


def test_the_setting_overrides_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEIGHTVAULT_API_WORKERS", "3")
    assert Settings().api_workers == 3
    monkeypatch.delenv("WEIGHTVAULT_API_WORKERS")
    assert Settings().api_workers is None  # serve then uses default_api_workers()
