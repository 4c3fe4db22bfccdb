"""The browser UI in a real browser against a real server (auth on): every flow goes through /v1 as any
client would, with the token from sessionStorage in the Authorization header."""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.checkpoints import save, trained_simple_model
from tests.ui.conftest import Browsing, UIServer

pytestmark = pytest.mark.slow

expect: Any = pytest.importorskip("playwright.sync_api").expect


def checkpoint(path: Path, seed: int = 0) -> Path:
    model, optimizer = trained_simple_model(seed)
    return save(
        {"epoch": 7, "model_state_dict": model.state_dict(), "optimizer_state_dict": optimizer.state_dict()},
        path,
    )


def mismatching_checkpoint(path: Path) -> Path:
    state = trained_simple_model()[0].state_dict()
    del state["linear.weight"]
    state["linear.bias"] = torch.zeros(3)
    state["head.weight"] = torch.zeros(2)
    return save(state, path)


class Gadget:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("this must never run",))


def push(server: UIServer, model: str, file: Path, **fields: str) -> dict[str, Any]:
    with server.api("write") as api, file.open("rb") as body:
        response = api.post(f"/v1/models/{model}/versions", files={"file": (file.name, body)}, data=fields)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def create(server: UIServer, name: str, **extra: Any) -> None:
    with server.api("write") as api:
        response = api.post("/v1/models", json={"name": name, "architecture": "simple-linear", **extra})
    assert response.status_code == 201, response.text


def test_browse_search_proof_snippets_download_and_alias(
    browse: Callable[[str | None], Browsing], ui_server: UIServer, tmp_path: Path
) -> None:
    create(ui_server, "alpha-net", description="the first one")
    create(ui_server, "beta-net")
    version = push(ui_server, "alpha-net", checkpoint(tmp_path / "alpha.pt"), metadata='{"acc": 0.98}')
    b = browse("write")

    page = b.goto("/")
    assert page.url.endswith("/ui/")
    expect(page.locator("#models")).to_contain_text("alpha-net")
    expect(page.locator("#models")).to_contain_text("beta-net")
    expect(page.locator("#scope")).to_have_text("signed in · write")
    b.shoot("models")
    page.fill("#search-q", "alp")
    page.click("form[role=search] button")
    expect(page.locator("#models")).not_to_contain_text("beta-net")
    expect(page.locator("#models tbody tr")).to_have_count(1)

    page.click("a.model-link:text('alpha-net')")
    expect(page.locator("#model-name")).to_have_text("alpha-net")
    row = page.locator("#versions tr[data-version='1']")
    expect(row).to_contain_text("passed · strict")
    expect(row).to_contain_text("epoch 7")
    expect(row.locator("[data-sha]")).to_have_attribute("data-sha", version["source"]["sha256"])
    expect(page.locator("#main")).to_contain_text("the first one")

    # Set an alias, then see it on the page and through the API.
    page.fill("#alias-name", "production")
    page.click("#alias-set")
    expect(page.locator("#aliases")).to_contain_text("production → v1")
    with ui_server.api("read") as api:
        assert api.get("/v1/models/alpha-net").json()["aliases"] == {"production": 1}
    b.shoot("model")

    # Edit the description and metadata (the metadata replaces the stored object).
    page.click("summary:text('Edit description and metadata')")
    page.fill("#edit-description", "now with a better description")
    page.fill("#edit-metadata", '{"owner": "vision team"}')
    page.click("form.stack button:text('Save')")
    expect(page.locator("#main")).to_contain_text("now with a better description")
    expect(page.locator("dl.kv").first).to_contain_text("vision team")
    with ui_server.api("read") as api:
        assert api.get("/v1/models/alpha-net").json()["metadata"] == {"owner": "vision team"}

    page.click("#versions a:text('v1')")
    expect(page.locator("#version-title")).to_contain_text("v1")
    expect(page.locator("#version-title")).to_contain_text("production")
    proof = page.locator("#proof")
    expect(proof).to_contain_text("simple-linear")
    expect(proof).to_contain_text("[2, 10] float32")
    expect(proof).to_contain_text("full.pt, weights.safetensors, weights.pt")
    expect(page.locator("#main")).to_contain_text("read without running any code")

    # The copyable commands name the URL and the token's variable, never the token itself.
    card = page.locator("article.artifact[data-kind=weights][data-format=safetensors]")
    curl = card.locator(".snippet pre").first.inner_text()
    assert f"{ui_server.url}/v1/models/alpha-net/versions/1/artifacts/weights?format=safetensors" in curl
    assert "$WEIGHTVAULT_TOKEN" in curl
    assert ui_server.tokens["write"] not in page.content()
    card.locator(".snippet button.copy").first.click()
    expect(card.locator(".snippet button.copy").first).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == curl
    b.shoot("version")

    # Download through the button; the bytes are the artifact the API lists.
    listed = {(a["kind"], a["format"]): a for a in version["artifacts"]}
    with page.expect_download() as info:
        card.locator("button.download").click()
    download = info.value
    assert download.suggested_filename == "alpha-net-v1-weights.safetensors"
    data = Path(download.path()).read_bytes()
    assert hashlib.sha256(data).hexdigest() == listed[("weights", "safetensors")]["sha256"]


def drop_file(page: Any, selector: str, path: Path, last_modified: int | None = None) -> None:
    """Drag and drop as a user does: a drop event whose DataTransfer holds the file (with the file's
    modification time, in ms, as a File from disk has)."""
    stamp = last_modified if last_modified is not None else int(path.stat().st_mtime * 1000)
    transfer = page.evaluate_handle(
        """([name, bytes, lastModified]) => {
            const data = new DataTransfer();
            data.items.add(new File([new Uint8Array(bytes)], name, { lastModified }));
            return data;
        }""",
        [path.name, list(path.read_bytes()), stamp],
    )
    page.dispatch_event(selector, "dragenter", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def test_upload_by_drop_with_progress_then_refusals_laid_out(
    browse: Callable[[str | None], Browsing], ui_server: UIServer, tmp_path: Path
) -> None:
    create(ui_server, "uploads")
    b = browse("write")
    page = b.goto("/ui/models/uploads")
    expect(page.locator("#main")).to_contain_text("No versions yet.")
    page.evaluate("window.stillTheSamePage = true")

    good = checkpoint(tmp_path / "good.pt", seed=3)
    drop_file(page, "#dropzone", good)
    expect(page.locator("#dropzone")).to_contain_text("good.pt")
    page.fill("#upload-metadata", '{"run": "drop"}')
    page.click("#upload-start")
    expect(page.locator("#upload-done")).to_contain_text("version 1")
    progress = page.locator("#upload-progress")
    assert progress.evaluate("bar => bar.value === bar.max && bar.max > 1")
    expect(page.locator("#upload-label")).to_contain_text("100%")
    expect(page.locator("#versions tr[data-version='1']")).to_contain_text("passed · strict")
    expect(page.locator("#model-sub")).to_contain_text("latest v1")
    expect(page.locator("#upload-start")).to_be_disabled()
    assert page.evaluate("window.stillTheSamePage") is True
    b.shoot("upload-accepted")
    with ui_server.api("read") as api:
        stored = api.get("/v1/models/uploads/versions/1").json()
    assert stored["metadata"] == {"run": "drop"}
    assert stored["source"]["sha256"] == hashlib.sha256(good.read_bytes()).hexdigest()

    # A mismatching checkpoint (chosen with the file input): the refusal as a key table.
    page.set_input_files("#upload-file", str(mismatching_checkpoint(tmp_path / "wrong.pt")))
    page.click("#upload-start")
    refusal = page.locator(".refusal[data-code=architecture_mismatch]")
    expect(refusal).to_be_visible()
    rows = refusal.locator("table.mismatch tbody tr")
    expect(rows).to_have_count(3)
    expect(refusal.locator("tr.mismatch-missing")).to_contain_text("linear.weight")
    expect(refusal.locator("tr.mismatch-unexpected")).to_contain_text("head.weight")
    shape = refusal.locator("tr.mismatch-shape")
    expect(shape).to_contain_text("linear.bias")
    expect(shape.locator("td").nth(2)).to_have_text("[1]")
    expect(shape.locator("td").nth(3)).to_have_text("[3]")
    b.shoot("upload-mismatch")

    # A pickle gadget: the refused global is named.
    gadget = tmp_path / "gadget.pt"
    gadget.write_bytes(pickle.dumps(Gadget(), protocol=2))
    page.set_input_files("#upload-file", str(gadget))
    page.click("#upload-start")
    unsafe = page.locator(".refusal[data-code=unsafe_checkpoint]")
    expect(unsafe.locator("ul.globals")).to_contain_text(re.compile(r"(__builtin__|builtins)\.print"))
    expect(page.locator("#versions tbody tr")).to_have_count(1)


def test_onnx_conversion_moves_to_succeeded_without_reload(
    browse: Callable[[str | None], Browsing], ui_server: UIServer, tmp_path: Path
) -> None:
    create(ui_server, "convertible")
    push(ui_server, "convertible", checkpoint(tmp_path / "c.pt"))
    b = browse("write")
    page = b.goto("/ui/models/convertible/versions/1")
    expect(page.locator("#onnx-status")).to_have_text("none")
    page.evaluate("window.stillTheSamePage = true")
    # Layout shifts of anything on the page itself (the footer below it may move when the artifact appears).
    page.evaluate(
        """() => {
            window.layoutShift = 0;
            const main = document.getElementById("main");
            new PerformanceObserver((list) => {
                for (const entry of list.getEntries()) {
                    if (entry.sources.some((s) => s.node && main.contains(s.node))) window.layoutShift += entry.value;
                }
            }).observe({ type: "layout-shift" });
        }"""
    )
    page.click("#onnx-convert")
    expect(page.locator("#onnx-status")).to_have_text(re.compile("queued|running|succeeded"))
    expect(page.locator("#onnx-status")).to_have_text("succeeded", timeout=60_000)
    expect(page.locator("#onnx-text")).to_contain_text("batch sizes 1, 7")
    onnx = page.locator("article.artifact[data-kind=onnx]")
    expect(onnx).to_contain_text("proven")
    expect(page.locator("#onnx-convert")).to_be_disabled()
    assert page.evaluate("window.stillTheSamePage") is True
    # Nothing moved while the job went from queued to succeeded: the artifact appears below the status.
    assert page.evaluate("window.layoutShift") < 0.001
    b.shoot("version-onnx")


def test_sign_in_with_a_read_token_shows_no_write_controls(
    browse: Callable[[str | None], Browsing], ui_server: UIServer, tmp_path: Path
) -> None:
    create(ui_server, "readable")
    push(ui_server, "readable", checkpoint(tmp_path / "r.pt"))
    b = browse(None)
    page = b.goto("/ui/")
    # No token: the sign-in form, and a wrong token is refused with the server's message.
    page.fill("#token", "wv_nothing_wrong")
    page.click("#signin")
    expect(page.locator(".error")).to_contain_text("not valid")
    b.shoot("signin")
    page.fill("#token", ui_server.tokens["read"])
    page.click("#signin")
    expect(page.locator("#scope")).to_have_text("signed in · read")
    expect(page.locator("#models")).to_contain_text("readable")
    assert page.evaluate("sessionStorage.getItem('weightvault.token')") == ui_server.tokens["read"]
    assert ui_server.tokens["read"] not in page.url
    assert b.context.cookies() == []
    expect(page.locator("summary:text('New model')")).to_have_count(0)
    expect(page.locator("#nav")).not_to_contain_text("Jobs")

    page.click("a.model-link:text('readable')")
    expect(page.locator("#versions tr[data-version='1']")).to_be_visible()
    for control in ("#dropzone", "#upload-file", "#alias-set", "#edit-metadata", "button.link.danger"):
        expect(page.locator(control)).to_have_count(0)
    page.click("#versions a:text('v1')")
    expect(page.locator("#proof")).to_be_visible()
    expect(page.locator("#onnx-text")).not_to_have_text("Looking for conversions…")
    expect(page.locator("#onnx-convert")).to_have_count(0)
    expect(page.locator("#edit-metadata")).to_have_count(0)
    expect(page.locator("button.download").first).to_be_visible()

    page.click("#signout")
    expect(page.locator("#token")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('weightvault.token')") is None


XSS = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'


def test_user_data_with_markup_renders_as_text(
    browse: Callable[[str | None], Browsing], ui_server: UIServer, tmp_path: Path
) -> None:
    create(ui_server, "markup", description=XSS, metadata={XSS: XSS})
    file = tmp_path / "x.pt"
    checkpoint(file)
    with ui_server.api("write") as api:
        response = api.post(
            "/v1/models/markup/versions",
            files={"file": (XSS + ".pt", file.read_bytes())},
            data={"metadata": json.dumps({"note": XSS})},
        )
    assert response.status_code == 201, response.text
    b = browse("admin")
    for path in ("/ui/", "/ui/models/markup", "/ui/models/markup/versions/1", "/ui/jobs"):
        page = b.goto(path)
        expect(page.locator("#main h1")).to_be_visible()
        if path != "/ui/jobs":
            expect(page.locator("#main")).to_contain_text(XSS)
        assert page.locator("#main script, #main img").count() == 0
        assert page.evaluate("window.pwned") is None
        if path.endswith("/versions/1"):
            b.shoot("version-markup")

    # The pages carry a CSP that forbids inline script, whatever else might slip through.
    with ui_server.api("read") as api:
        csp = api.get("/ui/models/markup").headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp


def test_architectures_and_admin_jobs_pages(
    browse: Callable[[str | None], Browsing], ui_server: UIServer
) -> None:
    b = browse("admin")
    page = b.goto("/ui/architectures")
    section = page.locator("#arch-simple-linear")
    expect(section).to_contain_text("x")
    expect(section).to_contain_text("[batch, 10]")
    b.shoot("architectures")
    page = b.goto("/ui/jobs")
    expect(page.locator("#main h1")).to_have_text("Jobs")
    b.shoot("jobs")


def test_remove_an_alias(
    browse: Callable[[str | None], Browsing], ui_server: UIServer, tmp_path: Path
) -> None:
    create(ui_server, "aliased")
    push(ui_server, "aliased", checkpoint(tmp_path / "a.pt"))
    with ui_server.api("write") as api:
        for alias in ("production", "staging"):
            assert api.put(f"/v1/models/aliased/aliases/{alias}", json={"version": 1}).status_code == 200
    b = browse("write")
    page = b.goto("/ui/models/aliased")
    expect(page.locator("#aliases li")).to_have_count(2)
    page.click("button[aria-label='Remove alias staging']")
    expect(page.locator("#aliases li")).to_have_count(1)
    expect(page.locator("#aliases")).to_contain_text("production → v1")
    expect(page.locator("#versions tr[data-version='1']")).not_to_contain_text("staging")
    with ui_server.api("read") as api:
        assert api.get("/v1/models/aliased").json()["aliases"] == {"production": 1}

    # A refusal (here the route answers as the server would for a token that lost its scope) is shown
    # next to the alias, and the alias stays.
    page.route(
        "**/v1/models/aliased/aliases/production",
        lambda route: route.fulfill(
            status=403,
            content_type="application/json",
            body=json.dumps(
                {"error": {"code": "forbidden", "message": "This token may not write.", "details": {}}}
            ),
        ),
    )
    page.click("button[aria-label='Remove alias production']")
    expect(page.locator("#aliases li .error")).to_contain_text("may not write")
    expect(page.locator("button[aria-label='Remove alias production']")).to_be_enabled()
    page.unroute("**/v1/models/aliased/aliases/production")
    page.click("button[aria-label='Remove alias production']")
    expect(page.locator("#aliases")).to_have_text("No aliases.")
    with ui_server.api("read") as api:
        assert api.get("/v1/models/aliased").json()["aliases"] == {}


def test_create_a_model_with_the_form(browse: Callable[[str | None], Browsing], ui_server: UIServer) -> None:
    b = browse("write")
    page = b.goto("/ui/")
    expect(page.locator("#main h1")).to_have_text("Models")
    page.click("summary:text('New model')")
    page.fill("#new-name", "made-in-browser")
    page.select_option("#new-architecture", "simple-linear")
    page.fill("#new-description", "created with the form")
    page.click("form.stack button:text('Create model')")
    expect(page.locator("#model-name")).to_have_text("made-in-browser")
    assert page.url.endswith("/ui/models/made-in-browser")
    expect(page.locator("#main")).to_contain_text("created with the form")
    expect(page.locator("#main")).to_contain_text("No versions yet.")
    expect(page.locator("#dropzone")).to_be_visible()
    with ui_server.api("read") as api:
        made = api.get("/v1/models/made-in-browser").json()
    assert made["architecture"] == "simple-linear"
    assert made["description"] == "created with the form"

    # A name that is taken: the server's refusal under the form, the page stays.
    page = b.goto("/ui/")
    page.click("summary:text('New model')")
    page.fill("#new-name", "made-in-browser")
    page.click("form.stack button:text('Create model')")
    expect(page.locator("details.create .error")).to_contain_text("model_exists")
    assert page.url.endswith("/ui/")
    # An invalid name is stopped by the form itself, before any request.
    page.fill("#new-name", "Not A Name")
    page.click("form.stack button:text('Create model')")
    assert page.locator("#new-name").evaluate("input => !input.validity.valid")
    assert page.url.endswith("/ui/")
    b.shoot("models-create")
