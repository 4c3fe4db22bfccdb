"""Recipe-backed artifacts: served, checked by fsck and freed by gc like whole files; old data dirs read.

``recompose`` turns a version's stored files into recipes over tensor blobs, whatever ingest wrote, so
these tests hold for both storages: downloads must be byte for byte the file they stand for.
"""

from __future__ import annotations

import hashlib
import io
import zlib
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import delete, select

from app.artifacts import stored
from app.artifacts.models import Artifact, ArtifactTensor
from app.main import create_app
from app.maintenance.service import fsck, gc
from app.settings import Settings
from app.storage.blobstore import BlobStore
from app.storage.composed import BlobRange, Literal, Recipe
from tests.checkpoints import save, trained_simple_model
from tests.conftest import create_model, upload
from tests.fixtures.stored import store_as_whole_files

URL = "/v1/models/demo/versions/{ref}/artifacts/{kind}"
FORMATS = [("full", "pt"), ("weights", "safetensors"), ("weights", "pt")]


def _runtime(client: TestClient) -> Any:
    return client.app.state.runtime  # type: ignore[attr-defined]


def _push(client: TestClient, tmp_path: Path, name: str = "c.pt", scale: float = 1.0) -> dict[str, Any]:
    model, optimizer = trained_simple_model()
    state = {k: v * scale for k, v in model.state_dict().items()}
    ckpt = {"epoch": 1, "model_state_dict": state, "optimizer_state_dict": optimizer.state_dict()}
    response = upload(client, "demo", save(ckpt, tmp_path / name))
    assert response.status_code == 201, response.text
    return dict(response.json())


def _bytes(client: TestClient, ref: int, kind: str, fmt: str) -> bytes:
    response = client.get(URL.format(ref=ref, kind=kind), params={"format": fmt})
    assert response.status_code == 200
    return response.content


def recompose(client: TestClient, number: int) -> None:
    """Store each of version ``number``'s whole-file artifacts as a recipe instead: a literal head, then
    the rest as two ranges of one tensor blob, with the file blob itself removed."""
    runtime = _runtime(client)
    store: BlobStore = runtime.store
    with runtime.sessions() as session:
        rows = session.scalars(
            select(Artifact).join(Artifact.version).where(Artifact.version.has(number=number))
        ).all()
        for artifact in rows:
            if artifact.storage == stored.RECIPE:
                continue
            data = store.path_for(artifact.sha256).read_bytes()
            head, rest = data[:37], data[37:]
            tensor = hashlib.sha256(rest).hexdigest()
            staged = store.staging_root / f"t-{tensor}"
            staged.write_bytes(rest)
            store.put(staged, tensor)
            half = len(rest) // 2
            recipe = Recipe.build(
                [Literal(head), BlobRange(tensor, 0, half), BlobRange(tensor, half, len(rest) - half)], store
            )
            assert (recipe.size, recipe.sha256) == (artifact.size, artifact.sha256)
            encoded = recipe.to_json()
            recipe_sha = hashlib.sha256(encoded).hexdigest()
            staged = store.staging_root / f"r-{recipe_sha}"
            staged.write_bytes(encoded)
            store.put(staged, recipe_sha)
            artifact.storage, artifact.recipe_sha256 = stored.RECIPE, recipe_sha
            session.add(ArtifactTensor(artifact_id=artifact.id, sha256=tensor))
        session.commit()
        for artifact in rows:
            store.remove(artifact.sha256)


@pytest.fixture
def composed(client: TestClient, tmp_path: Path) -> dict[str, bytes]:
    create_model(client)
    _push(client, tmp_path)
    files = {f"{kind}.{fmt}": _bytes(client, 1, kind, fmt) for kind, fmt in FORMATS}
    recompose(client, 1)
    return files


@pytest.mark.parametrize(("kind", "fmt"), FORMATS)
def test_a_recipe_is_served_as_the_file_it_composes(
    client: TestClient, composed: dict[str, bytes], kind: str, fmt: str
) -> None:
    whole = composed[f"{kind}.{fmt}"]
    url = URL.format(ref=1, kind=kind)
    params = {"format": fmt}
    for _ in range(2):  # identical on every request
        response = client.get(url, params=params)
        assert response.status_code == 200 and response.content == whole
        assert response.headers["etag"] == f'"{hashlib.sha256(whole).hexdigest()}"'
        assert response.headers["content-length"] == str(len(whole))
        assert response.headers["accept-ranges"] == "bytes"
        assert response.headers["x-weightvault-crc32"] == f"{zlib.crc32(whole):08x}"
    etag, crc = response.headers["etag"], response.headers["x-weightvault-crc32"]
    size = len(whole)
    for header, expected, content_range in [
        ("bytes=10-19", whole[10:20], f"bytes 10-19/{size}"),
        ("bytes=30-40", whole[30:41], f"bytes 30-40/{size}"),  # across the literal/blob boundary
        ("bytes=-7", whole[-7:], f"bytes {size - 7}-{size - 1}/{size}"),
        (f"bytes={size - 3}-", whole[-3:], f"bytes {size - 3}-{size - 1}/{size}"),
        (f"bytes=0-{size + 100}", whole, f"bytes 0-{size - 1}/{size}"),
    ]:
        partial = client.get(url, params=params, headers={"Range": header})
        assert partial.status_code == 206, header
        assert partial.content == expected, header
        assert partial.headers["content-range"] == content_range
        assert partial.headers["content-length"] == str(len(expected))
        assert partial.headers["x-weightvault-crc32"] == crc  # the whole file's, as the ETag is
    multi = client.get(url, params=params, headers={"Range": "bytes=0-3,-5"})
    assert multi.status_code == 206
    assert multi.headers["content-type"].startswith("multipart/byteranges; boundary=")
    assert whole[0:4] in multi.content and whole[-5:] in multi.content
    assert multi.headers["content-length"] == str(len(multi.content))

    head = client.head(url, params=params)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(size) and head.headers["etag"] == etag
    assert head.headers["x-weightvault-crc32"] == crc
    head_range = client.head(url, params=params, headers={"Range": "bytes=5-9"})
    assert head_range.status_code == 206 and head_range.headers["content-length"] == "5"
    cached = client.get(url, params=params, headers={"If-None-Match": etag})
    assert cached.status_code == 304 and cached.content == b""
    assert cached.headers["x-weightvault-crc32"] == crc
    beyond = client.get(url, params=params, headers={"Range": f"bytes={size + 10}-"})
    assert beyond.status_code == 416 and beyond.json()["error"]["code"] == "range_not_satisfiable"
    assert beyond.headers["content-range"] == f"bytes */{size}"
    malformed = client.get(url, params=params, headers={"Range": "bytes=9-2"})
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "invalid_range"


def test_fsck_rehashes_tensor_blobs_and_checks_each_composition(
    client: TestClient, composed: dict[str, bytes]
) -> None:
    runtime = _runtime(client)
    store: BlobStore = runtime.store
    with runtime.sessions() as session:
        report = fsck(session=session, store=store)
        assert report.clean, report.problems
        assert report.unreferenced_blobs == []
        artifact = session.scalars(select(Artifact).where(Artifact.kind == "full")).one()
        tensor = session.scalars(
            select(ArtifactTensor.sha256).where(ArtifactTensor.artifact_id == artifact.id).limit(1)
        ).one()
        recipe_sha = artifact.recipe_sha256
    assert recipe_sha is not None
    path = store.path_for(tensor)
    original = path.read_bytes()
    path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with runtime.sessions() as session:
        problems = fsck(session=session, store=store).problems
    assert any(f"corrupt blob: {path}" in p for p in problems)
    assert any("bad composition: demo v1 full/pt" in p and "hash to" in p for p in problems)
    path.write_bytes(original[:-1])
    with runtime.sessions() as session:
        problems = fsck(session=session, store=store, rehash=False).problems
    assert any("bad composition" in p and f"{tensor} holds {len(original) - 1} bytes" in p for p in problems)
    path.unlink()
    with runtime.sessions() as session:
        problems = fsck(session=session, store=store, rehash=False).problems
    assert any(f"tensor blob {tensor} is missing" in p for p in problems)
    path.write_bytes(original)

    # A tensor row missing would let gc free a blob in use: fsck says so.
    with runtime.sessions() as session:
        session.execute(delete(ArtifactTensor).where(ArtifactTensor.artifact_id == artifact.id))
        session.commit()
        problems = fsck(session=session, store=store).problems
    assert any("tensor rows mismatch: demo v1 full/pt" in p for p in problems)
    with runtime.sessions() as session:
        session.add(ArtifactTensor(artifact_id=artifact.id, sha256=tensor))
        session.commit()
    store.remove(recipe_sha)
    with runtime.sessions() as session:
        problems = fsck(session=session, store=store).problems
    assert problems == [
        f"missing recipe: demo v1 full/pt needs recipe blob {recipe_sha}, which is not on disk"
    ]
    assert client.get(URL.format(ref=1, kind="weights")).status_code == 200


@pytest.mark.parametrize("storage", ["recipe", "file"])
def test_fsck_reports_a_recorded_crc32_that_is_not_the_downloads(
    client: TestClient, composed: dict[str, bytes], storage: str
) -> None:
    """Clients check downloads against the row's CRC-32: a wrong one would fail every pull, so fsck says so."""
    runtime = _runtime(client)
    if storage == "file":
        store_as_whole_files(client)
    with runtime.sessions() as session:
        assert fsck(session=session, store=runtime.store).clean
        artifact = session.scalars(select(Artifact).where(Artifact.kind == "full")).one()
        assert artifact.storage == storage and artifact.crc32 == zlib.crc32(composed["full.pt"])
        artifact.crc32 ^= 1
        session.commit()
        problems = fsck(session=session, store=runtime.store).problems
    assert len(problems) == 1 and problems[0].startswith("crc32 mismatch: demo v1 full/pt records CRC-32")
    served = client.get(URL.format(ref=1, kind="full"))
    assert served.headers["x-weightvault-crc32"] != f"{zlib.crc32(served.content):08x}"


def test_deleting_versions_and_gc_free_exactly_the_tensors_no_recipe_reads(
    client: TestClient, tmp_path: Path, composed: dict[str, bytes]
) -> None:
    runtime = _runtime(client)
    store: BlobStore = runtime.store
    _push(client, tmp_path, "same.pt")  # the same files again: version 2 reads the same blobs
    recompose(client, 2)
    _push(client, tmp_path, "other.pt", scale=2.0)  # other weights (the same optimizer state)
    recompose(client, 3)

    def names(number: int) -> set[str]:
        with runtime.sessions() as session:
            artifacts = session.scalars(select(Artifact).where(Artifact.version.has(number=number))).all()
            return stored.blob_names(session=session, artifacts=artifacts)

    one, two, three = names(1), names(2), names(3)
    assert one == two and three - two
    assert client.delete("/v1/models/demo/versions/1").status_code == 204
    with runtime.sessions() as session:
        assert gc(session=session, store=store, grace_seconds=0).removed == []  # version 2 reads them all
    assert client.delete("/v1/models/demo/versions/3").status_code == 204
    with runtime.sessions() as session:
        freed = gc(session=session, store=store, grace_seconds=0).removed
    assert set(freed) == three - two  # what version 2 still reads stays
    assert {name for name, _path in store.iter_blobs()} == two
    for kind, fmt in FORMATS:
        assert _bytes(client, 2, kind, fmt) == composed[f"{kind}.{fmt}"]
    with runtime.sessions() as session:
        assert fsck(session=session, store=store).clean


def test_a_data_dir_written_before_recipes_is_served_as_it_was(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    """Rows and whole-file blobs as the code before migration 0008 wrote them still download, pass fsck and
    are kept by gc, next to recipe-backed versions."""
    from alembic import command

    from app.db.migrate import alembic_config

    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        create_model(client)
        _push(client, tmp_path)
        files = {f"{kind}.{fmt}": _bytes(client, 1, kind, fmt) for kind, fmt in FORMATS}
        store_as_whole_files(client)
    command.downgrade(alembic_config(database_url), "0007")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:  # migrates to head
        runtime = _runtime(client)
        for kind, fmt in FORMATS:
            assert _bytes(client, 1, kind, fmt) == files[f"{kind}.{fmt}"]
        # No CRC was recorded then: none is announced (clients check the sha256 instead).
        old = client.get(URL.format(ref=1, kind="full"))
        assert old.status_code == 200 and "x-weightvault-crc32" not in old.headers
        listed = client.get("/v1/models/demo/versions/1").json()["artifacts"]
        assert [a["crc32"] for a in listed] == [None, None, None]
        ranged = client.get(URL.format(ref=1, kind="full"), headers={"Range": "bytes=-9"})
        assert ranged.status_code == 206 and ranged.content == files["full.pt"][-9:]
        _push(client, tmp_path, "new.pt", scale=3.0)
        recompose(client, 2)
        with runtime.sessions() as session:
            assert {a.storage for a in session.scalars(select(Artifact))} == {"file", "recipe"}
            report = fsck(session=session, store=runtime.store)
            assert report.clean and report.unreferenced_blobs == []
            assert gc(session=session, store=runtime.store, grace_seconds=0).removed == []
        for kind, fmt in FORMATS:
            assert _bytes(client, 1, kind, fmt) == files[f"{kind}.{fmt}"]


def _tensor_blob_names(obj: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(obj, torch.Tensor):
        found.add(hashlib.sha256(obj.detach().contiguous().numpy().tobytes()).hexdigest())
    elif isinstance(obj, dict):
        for value in obj.values():
            found |= _tensor_blob_names(value)
    elif isinstance(obj, list | tuple):
        for value in obj:
            found |= _tensor_blob_names(value)
    return found


def test_each_distinct_tensor_is_stored_once_across_formats_and_versions(
    client: TestClient, tmp_path: Path, data_dir: Path
) -> None:
    """A state_dict costs its tensors once (for all three downloads) plus three recipes; a training
    checkpoint of the same weights adds only its optimizer's tensors; an fp16 copy is new bytes."""
    create_model(client)
    model, optimizer = trained_simple_model()
    state = model.state_dict()

    def blob_names() -> set[str]:
        return {path.name for path in (data_dir / "blobs").rglob("*") if path.is_file()}

    assert upload(client, "demo", save(state, tmp_path / "a.pt")).status_code == 201
    first = blob_names()
    tensors = _tensor_blob_names(state)
    assert tensors <= first and len(first - tensors) == 3  # the three recipes
    ckpt = {"epoch": 1, "model_state_dict": state, "optimizer_state_dict": optimizer.state_dict()}
    assert upload(client, "demo", save(ckpt, tmp_path / "b.pt")).status_code == 201
    added = blob_names() - first
    optimizer_tensors = _tensor_blob_names(optimizer.state_dict()) - tensors
    assert optimizer_tensors and optimizer_tensors <= added
    # Besides the optimizer's tensors: the new full.pt recipe only (weights.* are the same recipes).
    assert len(added - optimizer_tensors) == 1
    assert _bytes(client, 2, "weights", "pt") == _bytes(client, 1, "weights", "pt")
    loaded = torch.load(io.BytesIO(_bytes(client, 2, "full", "pt")), weights_only=True)
    assert torch.equal(loaded["optimizer_state_dict"]["state"][0]["momentum_buffer"],
                       optimizer.state_dict()["state"][0]["momentum_buffer"])  # fmt: skip

    half = {k: v.half() for k, v in state.items()}
    assert upload(client, "demo", save(half, tmp_path / "c.pt")).status_code == 201
    assert _tensor_blob_names(half) <= blob_names() - first - added
