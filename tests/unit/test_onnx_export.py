"""The pure exporter: packaging past the protobuf limit, reports, failures."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from app.architectures.builtin import MLP_ARCH
from app.onnx import export
from app.onnx.options import OnnxOptions


def test_models_past_the_protobuf_limit_travel_as_one_zip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pretend the limit is tiny, so a small model takes the external-data path a >2 GB one would.
    monkeypatch.setattr(export, "PROTOBUF_LIMIT", 0)
    config = MLP_ARCH.effective_config({"in_features": 16, "hidden_sizes": [32], "out_features": 4})
    torch.manual_seed(0)
    module = MLP_ARCH.build(config).eval()
    work = tmp_path / "work"
    work.mkdir()
    result = export.export_and_check(
        architecture=MLP_ARCH, config=config, weights=module.state_dict(), options=OnnxOptions(), workdir=work
    )
    assert result.packaging == "zip" and result.report["packaging"] == "zip"
    with zipfile.ZipFile(result.path) as bundle:
        names = set(bundle.namelist())
        assert "model.onnx" in names and any(name.endswith(".data") for name in names)
        bundle.extractall(tmp_path / "out")
    session = onnxruntime.InferenceSession(
        str(tmp_path / "out" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    x = torch.randn(5, 16)
    (got,) = session.run(None, {"x": x.numpy()})
    with torch.inference_mode():
        np.testing.assert_allclose(got, module(x).numpy(), atol=1e-5)
