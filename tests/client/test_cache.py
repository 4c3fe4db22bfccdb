"""The download cache against an in-process fake of the artifact endpoint (httpx.MockTransport):
revalidation with If-None-Match, resume with Range/If-Range, sha256 verification, placement."""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from weightvault import ChecksumMismatch, Client
from weightvault.cache import Cache, RefEntry, default_cache_dir, place
from weightvault.errors import BadRequest, NotFound

PATH = "/v1/models/demo/versions/latest/artifacts/weights"


@dataclass
class FakeArtifacts:
    """Serves one artifact the way the server does; ``body`` may differ from what ``sha256`` announces."""

    content: bytes
    sha256: str = ""
    corrupt: bool = False
    requests: list[httpx.Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sha256 = self.sha256 or hashlib.sha256(self.content).hexdigest()

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path != PATH:
            return httpx.Response(
                404, json={"error": {"code": "model_not_found", "message": "No such model."}}
            )
        etag = f'"{self.sha256}"'
        headers = {"ETag": etag, "Content-Disposition": 'attachment; filename="demo-v1-weights.safetensors"'}
        if request.headers.get("if-none-match") == etag:
            return httpx.Response(304, headers=headers)
        body = bytes(b ^ 1 for b in self.content) if self.corrupt else self.content
        match = re.fullmatch(r"bytes=(\d+)-", request.headers.get("range", ""))
        if match and request.headers.get("if-range", etag) == etag:
            start = int(match.group(1))
            if start >= len(body):
                return httpx.Response(416, headers={"Content-Range": f"bytes */{len(body)}"})
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
            return httpx.Response(206, headers=headers, content=body[start:])
        return httpx.Response(200, headers=headers, content=body)


@pytest.fixture
def fake() -> FakeArtifacts:
    return FakeArtifacts(os.urandom(300_000))


@pytest.fixture
def wv(fake: FakeArtifacts, tmp_path: Path) -> Client:
    client = Client("http://weightvault.test", cache_dir=tmp_path / "cache", progress=False, connect_retry=0)
    client.transport.http = httpx.Client(
        base_url="http://weightvault.test", transport=httpx.MockTransport(fake.handler)
    )
    return client


def _blob_files(wv: Client) -> list[str]:
    return sorted(p.name for p in wv.cache.blobs.iterdir()) if wv.cache.blobs.exists() else []


def test_first_pull_downloads_verifies_and_places(wv: Client, fake: FakeArtifacts, tmp_path: Path) -> None:
    pulled = wv.pull("demo", output=tmp_path)
    assert pulled.path == tmp_path / "demo-v1-weights.safetensors"
    assert pulled.path.read_bytes() == fake.content
    assert (pulled.sha256, pulled.size, pulled.transferred) == (
        fake.sha256,
        len(fake.content),
        len(fake.content),
    )
    assert not pulled.from_cache and pulled.resumed_from == 0
    assert _blob_files(wv) == [fake.sha256, f"{fake.sha256}.lock"]
    assert not os.stat(wv.cache.blob(fake.sha256)).st_mode & stat.S_IWUSR  # blobs are read-only
    assert fake.requests[0].url.params["format"] == "safetensors"
    assert "if-none-match" not in fake.requests[0].headers


def test_second_pull_revalidates_with_if_none_match_and_transfers_nothing(
    wv: Client, fake: FakeArtifacts, tmp_path: Path
) -> None:
    wv.pull("demo")
    again = wv.pull("demo", output=tmp_path / "again.safetensors")
    assert fake.requests[-1].headers["if-none-match"] == f'"{fake.sha256}"'
    assert again.from_cache and again.transferred == 0
    assert again.path.read_bytes() == fake.content


def test_an_interrupted_download_resumes_with_range(wv: Client, fake: FakeArtifacts, tmp_path: Path) -> None:
    half = len(fake.content) // 2
    wv.cache.blobs.mkdir(parents=True)
    wv.cache.partial(fake.sha256).write_bytes(fake.content[:half])
    key = Cache.key(wv.url, "demo", "latest", "weights", "safetensors")
    wv.cache.write_ref(key, RefEntry(fake.sha256, "demo-v1-weights.safetensors", len(fake.content)))

    pulled = wv.pull("demo", output=tmp_path / "w.safetensors")
    assert fake.requests[-1].headers["range"] == f"bytes={half}-"
    assert fake.requests[-1].headers["if-range"] == f'"{fake.sha256}"'
    assert (pulled.resumed_from, pulled.transferred) == (half, len(fake.content) - half)
    assert pulled.path.read_bytes() == fake.content
    assert not wv.cache.partial(fake.sha256).exists()


def test_a_partial_of_an_older_artifact_is_dropped_when_if_range_does_not_match(
    wv: Client, fake: FakeArtifacts
) -> None:
    old = "0" * 64
    wv.cache.blobs.mkdir(parents=True)
    wv.cache.partial(old).write_bytes(b"x" * 1000)
    wv.cache.write_ref(
        Cache.key(wv.url, "demo", "latest", "weights", "safetensors"), RefEntry(old, None, 5000)
    )
    pulled = wv.pull("demo")
    assert fake.requests[-1].headers["if-range"] == f'"{old}"'  # the server answered 200, the whole file
    assert pulled.sha256 == fake.sha256 and pulled.resumed_from == 0
    assert pulled.path.read_bytes() == fake.content


def test_a_partial_as_long_as_the_file_gets_416_and_starts_over(wv: Client, fake: FakeArtifacts) -> None:
    wv.cache.blobs.mkdir(parents=True)
    wv.cache.partial(fake.sha256).write_bytes(b"y" * len(fake.content))
    wv.cache.write_ref(
        Cache.key(wv.url, "demo", "latest", "weights", "safetensors"), RefEntry(fake.sha256, None, None)
    )
    pulled = wv.pull("demo")
    assert [r.headers.get("range") for r in fake.requests] == [f"bytes={len(fake.content)}-", None]
    assert pulled.path.read_bytes() == fake.content


def test_bytes_that_do_not_hash_to_the_etag_are_refused_and_nothing_is_placed(
    wv: Client, fake: FakeArtifacts, tmp_path: Path
) -> None:
    fake.corrupt = True
    dest = tmp_path / "out.safetensors"
    with pytest.raises(ChecksumMismatch) as caught:
        wv.pull("demo", output=dest)
    assert caught.value.expected == fake.sha256 and caught.value.actual != fake.sha256
    assert not dest.exists()
    assert _blob_files(wv) == [f"{fake.sha256}.lock"]  # neither a blob nor a partial stays
    assert list(tmp_path.glob(".out.safetensors*")) == []

    fake.corrupt = False
    assert wv.pull("demo", output=dest).path.read_bytes() == fake.content


def test_errors_are_typed_and_carry_the_servers_code_and_message(wv: Client) -> None:
    with pytest.raises(NotFound) as caught:
        wv.pull("other:2")
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        404,
        "model_not_found",
        "No such model.",
    )
    assert str(caught.value) == "No such model. (404 model_not_found)"


def test_placement_is_whole_or_absent(tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(b"abc")
    dest = place(blob, tmp_path / "sub" / "file.bin")
    assert dest.read_bytes() == b"abc"
    assert os.stat(dest).st_mode & 0o200  # a normal, writable file, unlike the blob
    with pytest.raises(FileNotFoundError):
        place(tmp_path / "missing", tmp_path / "sub" / "other.bin")
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["file.bin"]


def test_default_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WEIGHTVAULT_CACHE", str(tmp_path / "wv"))
    assert default_cache_dir() == tmp_path / "wv"
    monkeypatch.delenv("WEIGHTVAULT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "weightvault"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "weightvault"


def test_cache_refuses_names_that_are_not_sha256(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    for bad in ("../x", "A" * 64, "0" * 63):
        with pytest.raises(ValueError):
            cache.blob(bad)
    assert cache.read_ref("missing") is None
    (tmp_path / "refs").mkdir()
    (tmp_path / "refs" / "bad.json").write_text('{"sha256": "../../etc/passwd"}')
    assert cache.read_ref("bad") is None


def test_an_unknown_format_is_a_typed_error(wv: Client) -> None:
    def invalid_format(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            422,
            json={
                "error": {"code": "invalid_format", "message": "Use safetensors or pt.", "details": {"x": 1}}
            },
        )

    wv.transport.http = httpx.Client(
        base_url="http://weightvault.test", transport=httpx.MockTransport(invalid_format)
    )
    with pytest.raises(BadRequest) as caught:
        wv.pull("demo", format="zip")
    assert caught.value.code == "invalid_format" and caught.value.details == {"x": 1}


def test_a_hashing_failure_ends_the_pull_with_its_error_and_places_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hashing thread's error reaches the caller (not a hang, not a misleading checksum mismatch)."""
    fake = FakeArtifacts(os.urandom(3 * 1024 * 1024 + 5))
    client = Client("http://weightvault.test", cache_dir=tmp_path / "cache", progress=False, connect_retry=0)
    client.transport.http = httpx.Client(
        base_url="http://weightvault.test", transport=httpx.MockTransport(fake.handler)
    )
    real = hashlib.sha256

    class Failing:
        def __init__(self, *args: bytes) -> None:
            self.inner, self.calls = real(*args), 0

        def update(self, data: bytes) -> None:
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("hash failed")
            self.inner.update(data)

        def hexdigest(self) -> str:
            return self.inner.hexdigest()

    monkeypatch.setattr("weightvault.download.hashlib.sha256", Failing)
    with pytest.raises(RuntimeError, match="hash failed"):
        client.pull("demo", output=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert fake.sha256 not in _blob_files(client)
