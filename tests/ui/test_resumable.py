"""The UI's resumable upload (tus 1.0 through /v1/models/{model}/uploads) in a real browser: PATCH slices,
a dropped connection resumed from the server's offset, a re-drop after a reload resumed from where the
server stopped, and a refusal read from the upload's outcome."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.ui.conftest import Browsing, UIServer
from tests.ui.test_ui import checkpoint, create, drop_file, mismatching_checkpoint

pytestmark = pytest.mark.slow

expect: Any = pytest.importorskip("playwright.sync_api").expect

CHUNK = 1000  # bytes per PATCH, so a 2.5 kB checkpoint goes in three pieces


class Traffic:
    """Every tus request the page sends (method, path, Upload-Offset), and PATCHes to cut off."""

    def __init__(self, page: Any) -> None:
        self.requests: list[tuple[str, str, int | None]] = []
        self.cut: set[int] = set()  # ordinal numbers of PATCHes to abort (1 = the first)
        self.cut_from: int | None = None  # abort every PATCH from this ordinal on
        self.patches = 0
        page.on("request", self.seen)
        page.route("**/v1/uploads/*", self.handle)

    def seen(self, request: Any) -> None:
        if "/uploads" in request.url:
            offset = request.headers.get("upload-offset")
            path = request.url.split("://", 1)[1].split("/", 1)[1]
            self.requests.append((request.method, "/" + path, None if offset is None else int(offset)))

    def handle(self, route: Any) -> None:
        if route.request.method == "PATCH":
            self.patches += 1
            if self.patches in self.cut or (self.cut_from is not None and self.patches >= self.cut_from):
                self.cut.discard(self.patches)
                route.abort("connectionreset")
                return
        route.continue_()

    def offsets(self, method: str = "PATCH") -> list[int | None]:
        return [offset for m, _, offset in self.requests if m == method]

    def count(self, method: str) -> int:
        return sum(1 for m, _, _ in self.requests if m == method)


def small_slices(b: Browsing) -> None:
    b.context.add_init_script(f"sessionStorage.setItem('weightvault.upload.chunkBytes', '{CHUNK}');")


def stored_sha(server: UIServer, model: str, version: int) -> str:
    with server.api("read") as api:
        sha: str = api.get(f"/v1/models/{model}/versions/{version}").json()["source"]["sha256"]
    return sha


def upload_entries(page: Any) -> list[str]:
    keys: list[str] = page.evaluate(
        "Object.keys(sessionStorage).filter((key) => key.startsWith('weightvault.upload:'))"
    )
    return keys


def test_upload_resumes_after_a_dropped_connection(
    browse: Callable[[str | None], Browsing], ui_server: UIServer, tmp_path: Path
) -> None:
    create(ui_server, "resumed")
    good = checkpoint(tmp_path / "resumed.pt", seed=5)
    size = good.stat().st_size
    assert size > 2 * CHUNK
    b = browse("write")
    small_slices(b)
    page = b.goto("/ui/models/resumed")
    traffic = Traffic(page)
    traffic.cut = {2}  # the second PATCH is cut off once, then let through

    drop_file(page, "#dropzone", good)
    page.fill("#upload-metadata", '{"run": "resumed"}')
    page.click("#upload-start")
    expect(page.locator("#upload-done")).to_contain_text("version 1", timeout=30_000)

    # POST once; PATCH 0, 1000 (cut), HEAD, 1000 again, 2000; then the outcome with GET.
    assert traffic.count("POST") == 1
    assert traffic.offsets() == [0, CHUNK, CHUNK, 2 * CHUNK]
    assert traffic.count("HEAD") == 1
    assert traffic.count("GET") >= 1
    assert page.locator("#upload-progress").evaluate("bar => bar.value === bar.max && bar.max > 1")
    expect(page.locator("#upload-label")).to_contain_text("(100%)")
    expect(page.locator("#versions tr[data-version='1']")).to_contain_text("passed · strict")
    assert stored_sha(ui_server, "resumed", 1) == hashlib.sha256(good.read_bytes()).hexdigest()
    with ui_server.api("read") as api:
        assert api.get("/v1/models/resumed/versions/1").json()["metadata"] == {"run": "resumed"}
    assert upload_entries(page) == []  # a finished upload is forgotten


def test_redrop_after_reload_resumes_from_the_servers_offset(
    browse: Callable[[str | None], Browsing], ui_server: UIServer, tmp_path: Path
) -> None:
    create(ui_server, "reloaded")
    good = checkpoint(tmp_path / "reloaded.pt", seed=6)
    size = good.stat().st_size
    stamp = 1_700_000_000_000
    b = browse("write")
    small_slices(b)
    page = b.goto("/ui/models/reloaded")
    traffic = Traffic(page)
    traffic.cut_from = 2  # the connection is gone after the first slice

    drop_file(page, "#dropzone", good, last_modified=stamp)
    page.click("#upload-start")
    expect(page.locator("#upload-label")).to_contain_text("Connection lost at 1.00 KB")
    assert traffic.offsets()[:2] == [0, CHUNK]
    assert len(upload_entries(page)) == 1
    upload_path = next(path for m, path, _ in traffic.requests if m == "PATCH")

    # The user reloads the page (the tab keeps its sessionStorage) and drops the same file again. The
    # connection stays cut until the old page is gone: its retry loop may be about to PATCH again, and a
    # PATCH the server is still receiving would answer the new page's first PATCH 423 (busy), a retry.
    page.reload()
    expect(page.locator("#dropzone")).to_be_visible()
    page.unroute("**/v1/uploads/*")
    traffic = Traffic(page)
    drop_file(page, "#dropzone", good, last_modified=stamp)
    page.click("#upload-start")
    expect(page.locator("#upload-done")).to_contain_text("version 1", timeout=30_000)

    # No new upload: a HEAD of the remembered one, then PATCHes from the server's offset.
    assert traffic.count("POST") == 0
    assert traffic.count("HEAD") == 1
    assert {path for m, path, _ in traffic.requests if m == "PATCH"} == {upload_path}
    assert traffic.offsets() == [CHUNK, 2 * CHUNK]
    expect(page.locator("#upload-progress")).to_have_attribute("data-resumed-from", str(CHUNK))
    expect(page.locator("#upload-label")).to_contain_text("(100%)")
    expect(page.locator("#upload-label")).to_contain_text("resumed at 1.00 KB")
    assert page.locator("#upload-progress").evaluate("bar => bar.value === bar.max")
    assert stored_sha(ui_server, "reloaded", 1) == hashlib.sha256(good.read_bytes()).hexdigest()
    with ui_server.api("read") as api:
        assert api.get("/v1/models/reloaded/versions/1").json()["source"]["size"] == size
    assert upload_entries(page) == []
    b.shoot("upload-resumed")

    # A file with another modification time is another file: a new upload from byte 0.
    traffic = Traffic(page)
    drop_file(page, "#dropzone", good, last_modified=stamp + 1)
    page.click("#upload-start")
    expect(page.locator("#upload-done")).to_contain_text("version", timeout=30_000)
    assert traffic.count("POST") == 1
    assert traffic.offsets()[0] == 0


def test_refusal_through_the_resumable_path_shows_the_key_table(
    browse: Callable[[str | None], Browsing], ui_server: UIServer, tmp_path: Path
) -> None:
    create(ui_server, "refused")
    b = browse("write")
    small_slices(b)
    page = b.goto("/ui/models/refused")
    traffic = Traffic(page)
    wrong = mismatching_checkpoint(tmp_path / "wrong.pt")
    drop_file(page, "#dropzone", wrong)
    page.click("#upload-start")
    refusal = page.locator(".refusal[data-code=architecture_mismatch]")
    expect(refusal).to_be_visible(timeout=30_000)
    expect(refusal.locator("strong")).to_have_text("Refused")
    expect(refusal.locator("table.mismatch tbody tr")).to_have_count(3)
    expect(refusal.locator("tr.mismatch-missing")).to_contain_text("linear.weight")
    expect(refusal.locator("tr.mismatch-unexpected")).to_contain_text("head.weight")
    shape = refusal.locator("tr.mismatch-shape")
    expect(shape).to_contain_text("linear.bias")
    expect(shape.locator("td").nth(2)).to_have_text("[1]")
    expect(shape.locator("td").nth(3)).to_have_text("[3]")
    # On a phone the key column stays readable: a key breaks at its dots, never letter by letter.
    page.set_viewport_size({"width": 390, "height": 900})
    b.shoot("refusal-keys")
    lines = refusal.locator("tr.mismatch-unexpected td code").evaluate(
        "el => Math.round(el.getBoundingClientRect().height / parseFloat(getComputedStyle(el).lineHeight))"
    )
    assert lines <= 2  # "head." and "weight" at most
    page.set_viewport_size({"width": 1280, "height": 900})
    # It went through tus in pieces, and the outcome was read with GET /v1/uploads/{id}.
    assert traffic.count("POST") == 1
    assert traffic.offsets() == list(range(0, wrong.stat().st_size, CHUNK))
    assert traffic.count("GET") >= 1
    assert upload_entries(page) == []
    expect(page.locator("#main")).to_contain_text("No versions yet.")
    with ui_server.api("read") as api:
        assert api.get("/v1/models/refused/versions").json()["items"] == []
