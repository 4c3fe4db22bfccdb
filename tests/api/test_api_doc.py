"""docs/api.md is the contract: every endpoint it describes is served, and every served one is described."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
ENDPOINT = re.compile(r"`(GET|POST|PUT|PATCH|DELETE)(?:`/`HEAD)? (/[^\s`?]*)")
METHODS = ("get", "post", "put", "patch", "delete")


def _normal(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def documented() -> set[tuple[str, str]]:
    served_part = DOC.read_text().split("## Planned:", 1)[0]
    return {(method, _normal(path)) for method, path in ENDPOINT.findall(served_part)}


def served(client: TestClient) -> set[tuple[str, str]]:
    paths = client.get("/openapi.json").json()["paths"]
    return {
        (method.upper(), _normal(path))
        for path, item in paths.items()
        for method in item
        if method in METHODS
    }


def test_every_documented_endpoint_is_served_and_every_served_one_documented(client: TestClient) -> None:
    doc, api = documented(), served(client)
    assert len(doc) > 15
    assert sorted(doc - api) == [], "described in docs/api.md but not served"
    assert sorted(api - doc) == [], "served but not described in docs/api.md"


def test_readme_links_only_to_files_in_the_repository() -> None:
    root = DOC.parents[1]
    for document in (root / "README.md", *sorted((root / "docs").glob("*.md"))):
        text = document.read_text()
        assert "../shared" not in text, f"{document.name} points outside the repository"
        for target in re.findall(r"`((?:docs|client|app|benchmarks)/[\w./-]+\.(?:md|py|toml))`", text):
            assert (root / target).exists(), f"{document.name} names {target}, which does not exist"


def test_docs_pages_load_everything_from_the_app_itself(client: TestClient) -> None:
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
        assert assets, page
        assert [a for a in assets if a.startswith(("http:", "https:", "//"))] == [], page
        assert "fonts.googleapis" not in html and "cdn.jsdelivr" not in html
        for asset in assets:
            assert client.get(asset).status_code == 200, asset


def test_openapi_describes_every_refusal_with_the_contract_error_body(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    assert set(document["components"]["schemas"]["ErrorBody"]["required"]) == {"error"}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            refusals = {code: r for code, r in operation["responses"].items() if code.startswith("4")}
            assert "4XX" in refusals, (method, path)
            for code, response in refusals.items():
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, code)
    # and the service really answers that shape for a refusal the schema documents
    body = client.get("/v1/models/does-not-exist").json()
    assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"])
