"""The download cache against an in-process fake of the artifact endpoint (httpx.MockTransport):
revalidation with If-None-Match, resume with Range/If-Range, CRC-32 and sha256 verification, placement."""

from __future__ import annotations

import hashlib
import os
import re
import stat
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from weightvault import ChecksumMismatch, Client
from weightvault.cache import Cache, RefEntry, default_cache_dir, place
from weightvault.checksums import Verify
from weightvault.errors import BadRequest, NotFound

PATH = "/v1/models/demo/versions/latest/artifacts/weights"


@dataclass
class FakeArtifacts:
    """Serves one artifact the way the server does; ``body`` may differ from what ``sha256`` announces."""

    content: bytes
    sha256: str = ""
    corrupt: bool = False
    # What X-Weightvault-Crc32 announces ("" sends none), as the server does for artifacts that have one.
    crc32: str = ""
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
        if self.crc32:
            headers["X-Weightvault-Crc32"] = self.crc32
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


def _crc32(data: bytes) -> str:
    return f"{zlib.crc32(data):08x}"


def test_a_download_with_a_crc32_is_checked_by_it(wv: Client, fake: FakeArtifacts, tmp_path: Path) -> None:
    fake.crc32 = _crc32(fake.content)
    pulled = wv.pull("demo", output=tmp_path / "w.safetensors")
    assert pulled.verified_by == "crc32"
    assert pulled.path.read_bytes() == fake.content

    # Without a CRC (an artifact stored before the server recorded one) the sha256 is checked.
    fake.crc32 = ""
    again = Client(wv.url, cache_dir=tmp_path / "other-cache", progress=False, connect_retry=0)
    again.transport.http = wv.transport.http
    assert again.pull("demo").verified_by == "sha256"


def test_a_corrupt_body_fails_its_crc32_and_nothing_is_placed(
    wv: Client, fake: FakeArtifacts, tmp_path: Path
) -> None:
    fake.crc32, fake.corrupt = _crc32(fake.content), True
    dest = tmp_path / "out.safetensors"
    with pytest.raises(ChecksumMismatch) as caught:
        wv.pull("demo", output=dest)
    assert caught.value.expected == fake.crc32
    assert caught.value.actual == _crc32(bytes(b ^ 1 for b in fake.content))
    assert "crc32" in str(caught.value) and "discarded" in str(caught.value)
    assert not dest.exists()
    assert _blob_files(wv) == [f"{fake.sha256}.lock"]


def test_a_resumed_download_is_checked_by_its_sha256_whatever_crc_the_server_sends(
    wv: Client, fake: FakeArtifacts, tmp_path: Path
) -> None:
    """The kept part may have come from another server, which could have given a forged prefix the real
    prefix's CRC (CRCs are linear); only the sha256 of the whole resumed file shows it."""
    fake.crc32 = _crc32(fake.content)
    half = len(fake.content) // 3
    wv.cache.blobs.mkdir(parents=True)
    key = Cache.key(wv.url, "demo", "latest", "weights", "safetensors")
    wv.cache.write_ref(key, RefEntry(fake.sha256, "demo-v1-weights.safetensors", len(fake.content)))

    wv.cache.partial(fake.sha256).write_bytes(bytes(b ^ 1 for b in fake.content[:half]))
    with pytest.raises(ChecksumMismatch) as caught:
        wv.pull("demo")
    assert caught.value.expected == fake.sha256

    wv.cache.partial(fake.sha256).write_bytes(fake.content[:half])
    wv.cache.write_ref(key, RefEntry(fake.sha256, "demo-v1-weights.safetensors", len(fake.content)))
    pulled = wv.pull("demo", output=tmp_path / "w.safetensors")
    assert (pulled.resumed_from, pulled.verified_by) == (half, "sha256")
    assert pulled.path.read_bytes() == fake.content
    assert not wv.cache.origin_marker(fake.sha256).exists()  # sha256-checked: any server may use it


def test_pruning_a_crc_checked_blob_takes_its_marker_and_what_was_unpacked_from_it(tmp_path: Path) -> None:
    """Otherwise a forged ONNX bundle's unpacked files would outlive it and answer the next, honest pull."""
    real, forged = os.urandom(40_000), os.urandom(40_000)
    hostile = FakeArtifacts(forged, sha256=hashlib.sha256(real).hexdigest(), crc32=_crc32(forged))
    cache = Cache(tmp_path / "cache")
    _client_of(hostile, "http://hostile.test", cache.root).pull("demo")
    cache.extracted(hostile.sha256).mkdir(parents=True)
    assert cache.origin_marker(hostile.sha256).read_text() == "http://hostile.test"

    assert [blob.sha256 for blob in cache.prune()] == [hostile.sha256]
    assert not cache.origin_marker(hostile.sha256).exists()
    assert not cache.extracted(hostile.sha256).exists()

    # And a folder left from an earlier file of the same name never survives a new one.
    cache.extracted(hostile.sha256).mkdir(parents=True)
    honest = FakeArtifacts(real, crc32=_crc32(real))
    assert _client_of(honest, "http://honest.test", cache.root).pull("demo").path.read_bytes() == real
    assert not cache.extracted(hostile.sha256).exists()


def test_verify_sha256_checks_the_sha256_whatever_crc_the_server_sends(
    fake: FakeArtifacts, tmp_path: Path
) -> None:
    fake.crc32 = "00000000"  # wrong on purpose: only a client that checks the CRC would refuse the file
    client = Client(
        "http://weightvault.test", cache_dir=tmp_path / "c", progress=False, connect_retry=0, verify="sha256"
    )
    client.transport.http = httpx.Client(
        base_url="http://weightvault.test", transport=httpx.MockTransport(fake.handler)
    )
    pulled = client.pull("demo")
    assert (pulled.verified_by, pulled.path.read_bytes()) == ("sha256", fake.content)

    crc_client = Client("http://weightvault.test", cache_dir=tmp_path / "d", progress=False, connect_retry=0)
    crc_client.transport.http = client.transport.http
    with pytest.raises(ChecksumMismatch) as caught:
        crc_client.pull("demo")
    assert caught.value.expected == "00000000"


def _client_of(fake: FakeArtifacts, url: str, cache: Path, verify: Verify = "crc32") -> Client:
    client = Client(url, cache_dir=cache, progress=False, connect_retry=0, verify=verify)
    client.transport.http = httpx.Client(base_url=url, transport=httpx.MockTransport(fake.handler))
    return client


def test_a_blob_only_crc_checked_answers_no_other_server_without_its_sha256(tmp_path: Path) -> None:
    """A hostile server can pair any bytes with a CRC that matches them and another artifact's sha256. What
    it sends is cached under that sha256 on its word, so it must not answer pulls from anyone else."""
    real = os.urandom(200_000)
    forged = os.urandom(200_000)
    hostile = FakeArtifacts(forged, sha256=hashlib.sha256(real).hexdigest(), crc32=_crc32(forged))
    honest = FakeArtifacts(real, crc32=_crc32(real))
    cache = tmp_path / "cache"

    planted = _client_of(hostile, "http://hostile.test", cache).pull("demo")
    assert planted.verified_by == "crc32" and planted.path.read_bytes() == forged
    assert _client_of(hostile, "http://hostile.test", cache).pull("demo").from_cache  # its own word, again
    (cache / "extracted" / honest.sha256).mkdir(parents=True)  # as if an ONNX bundle had been unpacked

    pulled = _client_of(honest, "http://honest.test", cache).pull("demo", output=tmp_path / "w")
    assert pulled.path.read_bytes() == real and not pulled.from_cache
    assert not (cache / "extracted" / honest.sha256).exists()
    # Cached again, now from the server whose CRC checked it; a sha256-checking pull hashes it and keeps it.
    assert _client_of(honest, "http://honest.test", cache).pull("demo").from_cache
    strict = _client_of(honest, "http://honest.test", cache, verify="sha256").pull("demo")
    assert strict.from_cache and strict.path.read_bytes() == real
    assert not (cache / "blobs" / f"{honest.sha256}.origin").exists()  # hashed: any server may use it now


def test_a_sha256_checking_pull_does_not_trust_a_forged_blob_from_the_same_server(tmp_path: Path) -> None:
    real, forged = os.urandom(50_000), os.urandom(50_000)
    fake = FakeArtifacts(forged, sha256=hashlib.sha256(real).hexdigest(), crc32=_crc32(forged))
    cache = tmp_path / "cache"
    _client_of(fake, "http://one.test", cache).pull("demo")
    with pytest.raises(ChecksumMismatch):  # the cached copy fails its sha256, the fresh one too
        _client_of(fake, "http://one.test", cache, verify="sha256").pull("demo")
    assert _blob_files(Client("http://one.test", cache_dir=cache)) == [f"{fake.sha256}.lock"]


@pytest.mark.parametrize("announced", ["zz", "1234abcd5", "-0000001", " ", "0x1234ab"])
def test_a_malformed_crc32_header_falls_back_to_the_sha256(
    fake: FakeArtifacts, tmp_path: Path, announced: str
) -> None:
    """A header that is not 8 hex digits is no CRC: the download is checked by its sha256, not refused or
    trusted."""
    fake.crc32 = announced
    pulled = _client_of(fake, "http://odd.test", tmp_path / "c").pull("demo")
    assert (pulled.verified_by, pulled.path.read_bytes()) == ("sha256", fake.content)
    fake.corrupt = True
    with pytest.raises(ChecksumMismatch):
        _client_of(fake, "http://odd.test", tmp_path / "d").pull("demo")


def test_an_unknown_verify_choice_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="crc32, sha256"):
        Client("http://weightvault.test", cache_dir=tmp_path / "c", verify="md5")  # type: ignore[arg-type]


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

    monkeypatch.setattr("weightvault.checksums.hashlib.sha256", Failing)
    with pytest.raises(RuntimeError, match="hash failed"):
        client.pull("demo", output=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert fake.sha256 not in _blob_files(client)
