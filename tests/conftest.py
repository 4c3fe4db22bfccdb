"""Each test gets its own data dir and database: a SQLite file, or a PostgreSQL schema when
WEIGHTVAULT_TEST_DATABASE_URL names a PostgreSQL database (CI runs the suite both ways)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.main import create_app
from app.settings import Settings

TEST_ARCHITECTURES = "tests.fixtures.architectures"
POSTGRES_URL = os.environ.get("WEIGHTVAULT_TEST_DATABASE_URL", "")


def _postgres_schema_url(base: str, schema: str) -> str:
    url = make_url(base)
    return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)


@contextmanager
def isolated_database(root: Path) -> Iterator[str]:
    """A database of one's own: a SQLite file under ``root``, or a fresh schema in the PostgreSQL database."""
    if not POSTGRES_URL:
        yield f"sqlite:///{root / 'weightvault.db'}"
        return
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _postgres_schema_url(POSTGRES_URL, schema)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    with isolated_database(tmp_path) as url:
        yield url


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def settings(data_dir: Path, database_url: str) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=data_dir,
        database_url=database_url,
        architecture_modules=[TEST_ARCHITECTURES],
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def create_model(
    client: httpx.Client | TestClient, name: str = "demo", architecture: str = "simple-linear", **extra: Any
) -> dict[str, Any]:
    response = client.post("/v1/models", json={"name": name, "architecture": architecture, **extra})
    assert response.status_code == 201, response.text
    return dict(response.json())


def upload(
    client: httpx.Client | TestClient, model: str, path: Path, *, multipart: bool = False, **params: Any
) -> httpx.Response:
    if multipart:
        with path.open("rb") as handle:
            return client.post(
                f"/v1/models/{model}/versions", files={"file": (path.name, handle)}, params=params
            )
    return client.post(
        f"/v1/models/{model}/versions",
        content=path.read_bytes(),
        headers={"Content-Type": "application/octet-stream", "X-Filename": path.name},
        params=params,
    )


def stored_files(data_dir: Path) -> set[str]:
    """Every file under the data dir except the database and this process's own staging lock."""
    found = set()
    for path in data_dir.rglob("*"):
        if path.is_file() and not path.name.startswith("weightvault.db") and path.name != ".lock":
            found.add(str(path.relative_to(data_dir)))
    return found


def version_count(client: TestClient, model: str) -> int:
    response = client.get(f"/v1/models/{model}/versions", params={"limit": 500})
    assert response.status_code == 200
    return len(response.json()["items"])
