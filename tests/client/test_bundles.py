"""ONNX models past protobuf's limit arrive as a zip of the model and its external data."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import httpx
import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from weightvault import Client, UnexpectedResponse
from weightvault.bundles import is_bundle, local_model
from weightvault.cache import Cache

WEIGHT = np.arange(12, dtype=np.float32).reshape(3, 4)


def _bundle(tmp_path: Path) -> Path:
    """model.onnx (y = x @ W) with W in model.onnx.data, zipped the way the server does."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
        [numpy_helper.from_array(WEIGHT, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder = tmp_path / "export"
    folder.mkdir()
    onnx.save_model(
        model, folder / "model.onnx", save_as_external_data=True, location="model.onnx.data", size_threshold=0
    )
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as bundle:
        bundle.write(folder / "model.onnx", "model.onnx")
        bundle.write(folder / "model.onnx.data", "model.onnx.data")
    return archive


def _run(path: Path) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": np.ones((2, 3), dtype=np.float32)})
    return np.asarray(y)


def test_a_bundle_is_extracted_once_into_the_cache_and_runs(tmp_path: Path) -> None:
    archive = _bundle(tmp_path)
    assert is_bundle(archive) and not is_bundle(tmp_path / "export" / "model.onnx")
    cached = local_model(archive, extracted=Cache(tmp_path / "cache").extracted("a" * 64), output=None)
    assert cached == tmp_path / "cache" / "extracted" / ("a" * 64) / "model.onnx"
    np.testing.assert_array_equal(_run(cached), np.ones((2, 3), dtype=np.float32) @ WEIGHT)
    assert (
        local_model(archive, extracted=Cache(tmp_path / "cache").extracted("a" * 64), output=None) == cached
    )


def test_a_bundle_placed_at_an_output_path_keeps_its_data_file_beside_it(tmp_path: Path) -> None:
    out = local_model(
        _bundle(tmp_path), extracted=Cache(tmp_path).extracted("b" * 64), output=tmp_path / "o" / "my.onnx"
    )
    assert out == tmp_path / "o" / "my.onnx"
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx.data", "my.onnx"]
    np.testing.assert_array_equal(_run(out), np.ones((2, 3), dtype=np.float32) @ WEIGHT)


def test_a_bundle_naming_paths_outside_its_folder_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("model.onnx", b"\x08\x08")
        bundle.writestr("../escape.data", b"x")
    with pytest.raises(UnexpectedResponse):
        local_model(archive, extracted=Cache(tmp_path / "cache").extracted("c" * 64), output=None)
    assert not (tmp_path / "escape.data").exists()


def test_pull_onnx_serves_a_loadable_path_for_a_bundled_artifact(tmp_path: Path) -> None:
    content = _bundle(tmp_path).read_bytes()
    sha256 = hashlib.sha256(content).hexdigest()

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/models/big/versions/2/artifacts/onnx"
        headers = {"ETag": f'"{sha256}"', "Content-Disposition": 'attachment; filename="big-v2.onnx.zip"'}
        return httpx.Response(200, headers=headers, content=content)

    client = Client("http://wv.test", cache_dir=tmp_path / "cache", progress=False, connect_retry=0)
    client.transport.http = httpx.Client(base_url="http://wv.test", transport=httpx.MockTransport(handler))
    (tmp_path / "out").mkdir()
    path = client.pull_onnx("big:2", output=tmp_path / "out")
    assert path == tmp_path / "out" / "big-v2.onnx"
    np.testing.assert_array_equal(_run(path), np.ones((2, 3), dtype=np.float32) @ WEIGHT)
