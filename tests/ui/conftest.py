"""A real server (auth on, one conversion worker) and a real browser: Debian's chromium driven by Playwright.

Each test module gets its own server, data dir and database, so modules can run in parallel; each test
gets a fresh browser context (its own sessionStorage). Screenshots go to tests/ui/screenshots/ (git-ignored;
CI keeps them as artifacts).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.auth.service import create_token
from app.db.engine import make_engine, make_sessionmaker
from tests.conftest import isolated_database
from tests.server import running_server

CHROMIUM = os.environ.get("WEIGHTVAULT_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
WIDTHS = (1280, 390)

playwright_api = pytest.importorskip("playwright.sync_api")


@dataclass
class UIServer:
    url: str
    tokens: dict[str, str]

    def api(self, scope: str = "admin") -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.tokens[scope]}"}, timeout=60
        )


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UIServer]:
    root = tmp_path_factory.mktemp("ui")
    with (
        isolated_database(root) as database_url,
        running_server(root / "data", database_url, root / "server.log", WEIGHTVAULT_AUTH="on") as url,
    ):
        engine = make_engine(database_url)
        try:
            with make_sessionmaker(engine)() as session:
                tokens = {
                    scope: create_token(session=session, scope=scope)[1]
                    for scope in ("read", "write", "admin")
                }
        finally:
            engine.dispose()
        yield UIServer(url=url, tokens=tokens)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("WEIGHTVAULT_REQUIRE_BROWSER"):
            pytest.fail(f"no browser at {CHROMIUM}: apt-get install -y chromium")
        pytest.skip(f"no browser at {CHROMIUM} (apt-get install -y chromium)")
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM)
        try:
            yield launched
        finally:
            launched.close()


class Browsing:
    """A fresh browser context signed in (or not) with one token; fails the test on script errors."""

    def __init__(self, browser: Any, server: UIServer, scope: str | None) -> None:
        self.server = server
        self.context = browser.new_context(
            viewport={"width": WIDTHS[0], "height": 900}, accept_downloads=True
        )
        self.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
        if scope is not None:
            # What the sign-in page does: the token lives in this tab's sessionStorage only.
            self.context.add_init_script(
                f"sessionStorage.setItem('weightvault.token', {server.tokens[scope]!r});"
            )
        self.page = self.context.new_page()
        self.page.set_default_timeout(15_000)
        self.problems: list[str] = []
        self.page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        self.page.on("dialog", lambda dialog: self.problems.append(f"dialog opened: {dialog.message}"))
        self.page.on(
            "console",
            lambda msg: (
                self.problems.append(msg.text)
                if "Content Security Policy" in msg.text or "Refused to" in msg.text
                else None
            ),
        )

    def goto(self, path: str) -> Any:
        self.page.goto(self.server.url + path)
        return self.page

    def shoot(self, name: str) -> None:
        """Screenshots of the current page at 1280 and 390 px wide."""
        SCREENSHOTS.mkdir(exist_ok=True)
        for width in WIDTHS:
            self.page.set_viewport_size({"width": width, "height": 900})
            self.page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)
        self.page.set_viewport_size({"width": WIDTHS[0], "height": 900})

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def browse(browser: Any, ui_server: UIServer) -> Iterator[Callable[[str | None], Browsing]]:
    opened: list[Browsing] = []

    def open_as(scope: str | None) -> Browsing:
        session = Browsing(browser, ui_server, scope)
        opened.append(session)
        return session

    yield open_as
    problems = [problem for session in opened for problem in session.problems]
    for session in opened:
        session.close()
    assert problems == [], problems
