"""save_pretrained folders pushed as they are (multipart parts, tar, zip; sharded; .bin) and pulled back as `hf`."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from app.artifacts.models import Artifact
from app.main import create_app
from app.settings import Settings
from tests.api.test_architectures import error, register
from tests.conftest import create_model
from tests.fixtures.hf import tiny_config, tiny_model

transformers = pytest.importorskip("transformers")

TOKENIZER = {"version": "1.0", "model": {"type": "WordLevel", "vocab": {"[PAD]": 0}}}


def saved_folder(tmp_path: Path, class_name: str, **save: Any) -> tuple[Path, Any]:
    config = tiny_config(class_name)
    model = tiny_model(config)
    folder = tmp_path / "my-model"
    model.save_pretrained(folder, **save)
    (folder / "tokenizer.json").write_text(json.dumps(TOKENIZER))
    return folder, model


def as_bin(folder: Path, model: Any, shards: int = 1) -> None:
    """What transformers 4 wrote with safe_serialization=False: pytorch_model.bin (or shards and an index)."""
    for old in folder.glob("model*.safetensors*"):
        old.unlink()
    state = model.state_dict()
    if shards == 1:
        torch.save(state, folder / "pytorch_model.bin")
        return
    keys = sorted(state)
    weight_map = {}
    for i in range(shards):
        name = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
        part = {key: state[key] for key in keys[i::shards]}
        torch.save(part, folder / name)
        weight_map.update(dict.fromkeys(part, name))
    (folder / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )


def push_parts(client: TestClient, model: str, folder: Path) -> Any:
    files = [
        ("file", (path.name, path.read_bytes(), "application/octet-stream"))
        for path in sorted(folder.iterdir())
    ]
    return client.post(f"/v1/models/{model}/versions", files=files)


def push_archive(client: TestClient, model: str, folder: Path, kind: str) -> Any:
    buffer = io.BytesIO()
    if kind == "tar":
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            archive.add(folder, arcname=folder.name)
    else:
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(folder.iterdir()):
                archive.write(path, path.name)
    return client.post(
        f"/v1/models/{model}/versions",
        content=buffer.getvalue(),
        headers={"Content-Type": "application/octet-stream", "X-Filename": f"my-model.{kind}"},
    )


def pull_hf(client: TestClient, model: str, version: int, dest: Path) -> Path:
    response = client.get(f"/v1/models/{model}/versions/{version}/artifacts/hf")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert f'filename="{model}-v{version}-hf.zip"' in response.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        archive.extractall(dest)
    return dest


def same_outputs(a: Any, b: Any, inputs: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        out_a, out_b = a(**inputs), b(**inputs)
    compared = [key for key in out_a if isinstance(out_a[key], torch.Tensor)]
    assert compared
    for key in compared:
        assert torch.equal(out_a[key], out_b[key]), key


def text_inputs() -> dict[str, torch.Tensor]:
    return {"input_ids": torch.randint(0, 99, (2, 7), generator=torch.Generator().manual_seed(1))}


@pytest.mark.parametrize(
    ("class_name", "how"),
    [
        ("BertModel", "parts"),
        ("BertForSequenceClassification", "tar"),
        ("GPT2LMHeadModel", "zip"),
        ("ViTModel", "parts"),
    ],
)
def test_a_folder_pushed_as_it_is_comes_back_loadable_by_from_pretrained(
    client: TestClient, tmp_path: Path, class_name: str, how: str
) -> None:
    folder, model = saved_folder(tmp_path, class_name)
    register(client, "tiny", tiny_config(class_name))
    create_model(client, "m", architecture="tiny")
    response = push_parts(client, "m", folder) if how == "parts" else push_archive(client, "m", folder, how)
    assert response.status_code == 201, response.text
    version = response.json()
    files = {entry["filename"]: entry for entry in version["source"]["files"]}
    assert set(files) == {path.name for path in folder.iterdir()}
    assert files["tokenizer.json"]["size"] == (folder / "tokenizer.json").stat().st_size
    hf = next(a for a in version["artifacts"] if a["kind"] == "hf")
    assert hf["format"] == "zip" and hf["validation"]["status"] == "passed"

    back = pull_hf(client, "m", version["version"], tmp_path / "back")
    assert json.loads((back / "tokenizer.json").read_text()) == TOKENIZER
    loaded = getattr(transformers, class_name).from_pretrained(back).eval()
    for key, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key
    if class_name.startswith("ViT"):
        pixels = torch.randn(2, 3, 30, 30, generator=torch.Generator().manual_seed(2))
        same_outputs(model, loaded, {"pixel_values": pixels})
    else:
        same_outputs(model, loaded, text_inputs())
    if class_name == "GPT2LMHeadModel":  # tied head stays tied
        assert loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr()
    # full and weights exist as for every version, and the hf artifact is the same bytes each time
    kinds = {(a["kind"], a["format"]) for a in version["artifacts"]}
    assert {("full", "pt"), ("weights", "safetensors"), ("weights", "pt"), ("hf", "zip")} <= kinds
    again = client.get(f"/v1/models/m/versions/{version['version']}/artifacts/hf")
    assert again.headers["etag"] == f'"{hf["sha256"]}"'


@pytest.mark.parametrize("form", ["sharded-safetensors", "bin", "sharded-bin"])
def test_sharded_and_bin_folders_are_read_as_one_state_dict(
    client: TestClient, tmp_path: Path, form: str
) -> None:
    if form == "sharded-safetensors":
        folder, model = saved_folder(tmp_path, "BertModel", max_shard_size="20KB")
        assert len(list(folder.glob("model-*.safetensors"))) > 2
    else:
        folder, model = saved_folder(tmp_path, "BertModel")
        as_bin(folder, model, shards=3 if form == "sharded-bin" else 1)
    register(client, "tiny", tiny_config("BertModel"))
    create_model(client, "m", architecture="tiny")
    response = push_archive(client, "m", folder, "tar")
    assert response.status_code == 201, response.text
    version = response.json()
    assert version["source"]["format"] == ("safetensors" if form == "sharded-safetensors" else "torch_zip")
    loaded = transformers.BertModel.from_pretrained(
        pull_hf(client, "m", version["version"], tmp_path / "back")
    )
    same_outputs(model.eval(), loaded.eval(), text_inputs())


def test_a_base_model_pushed_into_a_model_with_a_tied_head_lines_up(
    client: TestClient, tmp_path: Path
) -> None:
    """GPT2Model's keys have no `transformer.` prefix; GPT2LMHeadModel keeps them under it, head tied."""
    base_config = tiny_config("GPT2LMHeadModel")
    lm = tiny_model(base_config)
    base = lm.transformer
    buffer = io.BytesIO()
    torch.save(base.state_dict(), buffer)
    register(client, "tiny", base_config)
    create_model(client, "m", architecture="tiny")
    response = client.post(
        "/v1/models/m/versions",
        content=buffer.getvalue(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 201, response.text
    loaded = transformers.GPT2LMHeadModel.from_pretrained(pull_hf(client, "m", 1, tmp_path / "back")).eval()
    same_outputs(lm, loaded, text_inputs())


def test_a_config_that_changes_shapes_is_refused_with_its_differences(
    client: TestClient, tmp_path: Path
) -> None:
    folder, _ = saved_folder(tmp_path, "BertModel")
    register(client, "tiny", tiny_config("BertModel", intermediate_size=40))
    create_model(client, "m", architecture="tiny")
    body = error(push_parts(client, "m", folder), 422, "architecture_mismatch")
    assert body["details"]["config_differences"] == [{"key": "intermediate_size", "expected": 40, "got": 37}]
    assert "intermediate_size" in body["message"]
    assert client.get("/v1/models/m/versions").json()["items"] == []


def test_a_config_that_differs_only_where_shapes_do_not_care_is_accepted(
    client: TestClient, tmp_path: Path
) -> None:
    folder, _ = saved_folder(tmp_path, "BertModel")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_dropout_prob": 0.3}))
    register(client, "tiny", tiny_config("BertModel"))
    create_model(client, "m", architecture="tiny")
    assert push_parts(client, "m", folder).status_code == 201


def test_hostile_folders_are_refused_and_leave_nothing(
    client: TestClient, tmp_path: Path, data_dir: Path
) -> None:
    folder, _ = saved_folder(tmp_path, "BertModel")
    register(client, "tiny", tiny_config("BertModel"))
    create_model(client, "m", architecture="tiny")
    before = sorted(
        p.relative_to(data_dir) for p in data_dir.rglob("*") if p.is_file() and "staging" not in p.parts
    )

    link = io.BytesIO()
    with tarfile.open(fileobj=link, mode="w") as archive:
        archive.add(folder / "model.safetensors", arcname="model.safetensors")
        info = tarfile.TarInfo("config.json")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        archive.addfile(info)
    response = client.post(
        "/v1/models/m/versions", content=link.getvalue(), headers={"Content-Type": "application/octet-stream"}
    )
    error(response, 422, "unsafe_checkpoint")

    climbing = io.BytesIO()
    with tarfile.open(fileobj=climbing, mode="w") as archive:
        archive.add(folder / "model.safetensors", arcname="model.safetensors")
        archive.add(folder / "config.json", arcname="../../config.json")
    response = client.post(
        "/v1/models/m/versions",
        content=climbing.getvalue(),
        headers={"Content-Type": "application/octet-stream"},
    )
    error(response, 422, "unsafe_checkpoint")

    pickle_in_bin = folder / "pytorch_model.bin"
    marker = tmp_path / "pwned"
    from tests.hostile import gadgets, torch_zip_bytes

    pickle_in_bin.write_bytes(torch_zip_bytes({"x": gadgets(marker)["os.system"]}))
    (folder / "model.safetensors").unlink()
    error(push_parts(client, "m", folder), 422, "unsafe_checkpoint")
    assert not marker.exists()

    response = client.post(
        "/v1/models/m/versions",
        files=[("file", ("../config.json", b"{}")), ("file", ("model.safetensors", b"x"))],
    )
    assert response.status_code == 422, response.text

    after = sorted(
        p.relative_to(data_dir) for p in data_dir.rglob("*") if p.is_file() and "staging" not in p.parts
    )
    assert after == before
    assert client.get("/v1/models/m/versions").json()["items"] == []


def test_an_extra_file_over_its_limit_is_refused(client: TestClient, tmp_path: Path) -> None:
    folder, _ = saved_folder(tmp_path, "BertModel")
    (folder / "notes.txt").write_bytes(b"x" * (17 * 1024 * 1024))
    register(client, "tiny", tiny_config("BertModel"))
    create_model(client, "m", architecture="tiny")
    body = error(push_parts(client, "m", folder), 413, "too_large")
    assert body["details"]["file"] == "notes.txt"


def test_the_hf_artifact_is_sharded_past_the_shard_size_and_extras_limits_are_settings(
    settings: Settings, tmp_path: Path
) -> None:
    small = settings.model_copy(update={"hf_shard_bytes": 20_000, "max_extra_files": 1})
    folder, model = saved_folder(tmp_path, "BertModel")
    with TestClient(create_app(small), raise_server_exceptions=False) as client:
        register(client, "tiny", tiny_config("BertModel"))
        create_model(client, "m", architecture="tiny")
        response = push_parts(client, "m", folder)
        assert response.status_code == 201, response.text
        back = pull_hf(client, "m", 1, tmp_path / "back")
        shards = sorted(path.name for path in back.glob("model-*.safetensors"))
        assert len(shards) > 2 and (back / "model.safetensors.index.json").exists()
        same_outputs(model, transformers.BertModel.from_pretrained(back).eval(), text_inputs())

        (folder / "special_tokens_map.json").write_text("{}")
        body = error(push_parts(client, "m", folder), 422, "limit_exceeded")
        assert body["details"] == {"extras": 2, "limit": 1}


def test_the_hf_zip_is_composed_from_the_stored_tensors_and_served_identically(
    client: TestClient, tmp_path: Path
) -> None:
    """The hf zip reads the tensor blobs the other downloads read: pushing a transformers model stores
    its tensor bytes once, and the zip is the same bytes on every request and every Range."""
    config = tiny_config("GPT2LMHeadModel", vocab_size=2048)  # tensors well above the metadata
    model = tiny_model(config)
    folder = tmp_path / "my-model"
    model.save_pretrained(folder)
    (folder / "tokenizer.json").write_text(json.dumps(TOKENIZER))
    register(client, "tiny", config)
    create_model(client, "m", architecture="tiny")
    runtime: Any = client.app.state.runtime  # type: ignore[attr-defined]

    def at_rest() -> int:
        return sum(path.stat().st_size for path in runtime.store.blobs_dir.glob("??/*"))

    before = at_rest()
    response = push_parts(client, "m", folder)
    assert response.status_code == 201, response.text
    grown = at_rest() - before
    storages = {
        t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in model.state_dict().values()
    }
    tensor_bytes = sum(storages.values())  # the tied head and embeddings share one storage
    metadata = 64 * 1024  # four recipes (pickles, headers, config.json, tokenizer), base64 in JSON
    assert tensor_bytes <= grown <= 1.02 * tensor_bytes + metadata, (grown, tensor_bytes)
    with runtime.sessions() as session:
        rows = {
            (artifact.kind, artifact.format): artifact
            for artifact in session.scalars(select(Artifact).options(selectinload(Artifact.tensors)))
        }
        hf, safetensors = rows[("hf", "zip")], rows[("weights", "safetensors")]
        assert hf.storage == "recipe" and hf.recipe_sha256 is not None
        assert {t.sha256 for t in hf.tensors} == {t.sha256 for t in safetensors.tensors}
    assert sum(a["size"] for a in response.json()["artifacts"]) > 3 * tensor_bytes  # served, not stored

    url = "/v1/models/m/versions/1/artifacts/hf"
    whole = client.get(url).content
    hf_read = next(a for a in response.json()["artifacts"] if a["kind"] == "hf")
    assert hashlib.sha256(whole).hexdigest() == hf_read["sha256"] and len(whole) == hf_read["size"]
    with zipfile.ZipFile(io.BytesIO(whole)) as archive:
        assert archive.testzip() is None
        assert sorted(archive.namelist()) == sorted(path.name for path in folder.iterdir())
        assert archive.read("model.safetensors") == (folder / "model.safetensors").read_bytes()
    again = client.get(url)
    assert again.content == whole and again.headers["etag"] == f'"{hf_read["sha256"]}"'
    assert again.headers["content-length"] == str(len(whole))
    size = len(whole)
    for header, expected in [
        ("bytes=0-99", whole[:100]),
        (f"bytes={size // 3}-{size // 2}", whole[size // 3 : size // 2 + 1]),
        ("bytes=-1000", whole[-1000:]),
    ]:
        partial = client.get(url, headers={"Range": header})
        assert partial.status_code == 206 and partial.content == expected, header
    head = client.head(url)
    assert head.status_code == 200 and head.headers["content-length"] == str(size)
    assert client.get(url, headers={"If-None-Match": again.headers["etag"]}).status_code == 304
